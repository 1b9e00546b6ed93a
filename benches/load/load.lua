-- wrk script for every closed-loop run.
-- With KEYS_FILE set (arm E), each request carries a key picked at random from that file (one
-- secret per line); without it wrk sends its static request (faster: no Lua per request).
-- done() prints one machine-readable line that run.sh parses.

local path = "/v1/article/a1"
local requests = {}

if os.getenv("KEYS_FILE") then
  -- Pre-format every request once: building strings per request would load the generator.
  function init(args)
    for key in io.lines(os.getenv("KEYS_FILE")) do
      requests[#requests + 1] = wrk.format("GET", path, { Authorization = "Bearer " .. key })
    end
    math.randomseed(os.time())
  end

  function request()
    return requests[math.random(#requests)]
  end
end

function done(summary, latency, per_thread)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d errors=%d bad_status=%d\n",
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status))
end
