#!/usr/bin/env bash
# The side-by-side load benchmark: where kbgate stands next to what a user would otherwise deploy.
#
#   bash benches/load/run.sh            the whole benchmark, then the profile (about 13 minutes)
#   bash benches/load/run.sh profile    only the profile of arm C (about 2 minutes)
#   bash benches/load/run.sh quick      only arms A, B and C, closed and open loop (about 3 minutes
#                                       with REPEATS=1): the before/after check of one change
#   bash benches/load/run.sh instructions  only the callgrind table of B, H, C and L (about 3
#                                       minutes; instruction counts do not depend on a quiet machine)
#
# Arms, all against the same upstream (nginx serving one static JSON article):
#   A          direct to the upstream
#   B          nginx as an authenticating reverse proxy (one static key in a `map`), upstream keep-alive
#   C          kbgate, the key in the hot tier
#   D-embedded kbgate, hot tier off (max_age 0s): every request reads the embedded store
#   D-redis    kbgate, hot tier off, Redis store (a redis-server started here)
#   E          kbgate, 100k keys in the store and the hot tier, a random key per request
#   H          the floor of kbgate's stack: examples/bare_proxy.rs, hyper-util's server and hyper's
#              client connections on the same runtime and allocator, doing nothing else (no key
#              check, no header hygiene, no log)
# Servers run on CPU $SERVER_CPU, the load generators on CPU $CLIENT_CPU. Each repeat runs the arms in
# a new random order; a warm-up run before each measured run is discarded; medians are reported.
# Closed loop (wrk): maximum throughput. Open loop (oha, fixed rate, latency corrected so a stall
# counts against every request it delays): p50, p99, p99.9 at one rate for every arm, by default
# half of the slowest of A, B and C, so that the three compared arms all have headroom. (Half of
# A's maximum, RATE=half-a, saturates every proxy on a core shared with the upstream, and oha too.)
# Then: upstream connections opened per 10k requests; gateway RSS with 1M keys in the store and
# 100k in the hot tier, embedded and Redis; with PROFILE=1, a CPU profile, syscalls and allocations
# per request for arm C.
#
# Only loopback addresses are used. Every process started here is stopped at exit (trap EXIT).
# Settings (environment variables):
REPEATS=${REPEATS:-3}          # measured repeats of every arm and phase (medians over these)
DURATION=${DURATION:-10}       # seconds of each measured run
WARMUP=${WARMUP:-3}            # seconds of the discarded warm-up before each measured run
CONNECTIONS=${CONNECTIONS:-32} # client connections, closed and open loop
RATE=${RATE:-half-slowest}     # open-loop requests/s, or half-slowest (half of the lowest of the
                               # closed-loop medians of A, B and C), or half-a (half of A's)
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
LOGS=${LOGS:-on}               # on: kbgate logs each request (as shipped), nginx B too; off: neither
E_KEYS=${E_KEYS:-100000}       # keys in arm E's store and hot tier
RSS_KEYS=${RSS_KEYS:-1000000}  # keys in the store for the memory figure...
RSS_HOT=${RSS_HOT:-100000}     # ...of which this many are warmed into the hot tier
PROFILE=${PROFILE:-1}          # 1: profile arm C after the benchmark (perf, perf trace, valgrind)
INSTALL=${INSTALL:-1}          # 1: apt-get/cargo install what is missing (needs root for apt-get)
EXTRA_CONFIG=${EXTRA_CONFIG:-}  # YAML appended to every kbgate config, e.g. 'usage: { flush_interval: 60s }'
KEEP_WORK=${KEEP_WORK:-0}      # 1: keep the temp dir (configs, logs, key files) for a post-mortem

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RESULTS_DIR="$HERE/results"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$RESULTS_DIR/$STAMP.md"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kbgate-load.XXXXXX")
RAW="$WORK/raw.tsv" # one line per measured run: phase, arm, repeat, metric, value
PATH_UNDER_TEST=/v1/article/a1
UPSTREAM_TOKEN="kb-upstream-credential"
ADMIN_TOKEN="load-benchmark-admin-token"
KBGATE="$ROOT/target/release/kbgate"
SEED="$ROOT/target/release/examples/seed_keys"
BARE="$ROOT/target/release/examples/bare_proxy"
WARM="$ROOT/target/release/examples/warm_keys"
ARMS=(A B C D-embedded D-redis E H L)

declare -A PORT    # arm or server -> port
declare -A KEY     # arm -> the secret it presents (E: a key file instead)
declare -A PID_OF  # server -> pid
PIDS=()            # every process started here, stopped at exit
USED_PORTS=" "

# ---------- small helpers ----------

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    # Give each a few seconds to stop on its own (kbgate flushes usage), then insist.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [[ $KEEP_WORK == 1 ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sets PORT[name] to a port nobody listens on and that this script has not handed out yet.
pick_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 30000))
    [[ $USED_PORTS == *" $port "* ]] && continue
    ss -Hltn "sport = :$port" | grep -q . && continue
    USED_PORTS+="$port "
    PORT[$1]=$port
    return
  done
}

# Copies a template, replacing each @NAME@ given as NAME=value.
render() {
  local template=$1 out=$2 pair
  shift 2
  cp "$template" "$out"
  for pair in "$@"; do
    sed -i "s|@${pair%%=*}@|${pair#*=}|g" "$out"
  done
}

# Starts a server in the background on the server CPU; remembers its pid under `name`.
start_server() {
  local name=$1 log=$2
  shift 2
  taskset -c "$SERVER_CPU" "$@" >"$log" 2>&1 &
  PID_OF[$name]=$!
  PIDS+=("$!")
}

wait_for_port() {
  local port=$1 name=$2
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return
    kill -0 "${PID_OF[$name]}" 2>/dev/null || die "$name exited at start (logs in $WORK/$name)"
    sleep 0.05
  done
  die "$name is not listening on $port after 10s"
}

# Resident memory of a process, in MiB.
rss_mib() { awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RAW"; }

median() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Median over the repeats of one phase/arm/metric.
med() { awk -F'\t' -v p="$1" -v a="$2" -v m="$3" '$1 == p && $2 == a && $4 == m { print $5 }' "$RAW" | median; }
# Each repeat's closed-loop throughput of arm $1 over arm $2, in repeat order, then their median
# in parentheses. The arms of one repeat run back to back, so a ratio within a repeat moves less
# with the VM's drift than the ratio of two medians taken over the whole run does.
paired() {
  local ratios
  ratios=$(awk -F'\t' -v x="$1" -v y="$2" '
    $1 == "closed" && $4 == "rps" && $2 == x { a[$3] = $5; if ($3 > n) n = $3 }
    $1 == "closed" && $4 == "rps" && $2 == y { b[$3] = $5 }
    END { for (r = 1; r <= n; r++) if ((r in b) && b[r] > 0) printf "%.2f\n", a[r] / b[r] }' "$RAW")
  [[ -n $ratios ]] || { echo "-"; return; }
  echo "$(paste -sd/ <<<"$ratios" | sed 's|/| / |g') (median $(median <<<"$ratios"))"
}
# Sum over the repeats (for error counts).
total() { awk -F'\t' -v p="$1" -v a="$2" -v m="$3" '$1 == p && $2 == a && $4 == m { s += $5 } END { print s + 0 }' "$RAW"; }

url_of() { echo "http://127.0.0.1:${PORT[$1]}$PATH_UNDER_TEST"; }

# ---------- tools and build ----------

ensure_tools() {
  local -A package=([nginx]=nginx [wrk]=wrk [redis-server]=redis-server [jq]=jq [curl]=curl [ss]=iproute2)
  [[ $PROFILE == 1 ]] && package+=([perf]=linux-perf [valgrind]=valgrind)
  local missing=() cmd
  for cmd in "${!package[@]}"; do
    command -v "$cmd" >/dev/null || missing+=("${package[$cmd]}")
  done
  if ((${#missing[@]})); then
    [[ $INSTALL == 1 && $(id -u) == 0 ]] || die "missing tools; install: apt-get install -y ${missing[*]}"
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  export PATH="$PATH:$HOME/.cargo/bin"
  if ! command -v oha >/dev/null; then
    [[ $INSTALL == 1 ]] || die "missing oha; install: cargo install oha --locked"
    say "installing oha (the open-loop load generator; a few minutes)"
    cargo install oha --locked --quiet
  fi
}

build() {
  say "building kbgate and the seeding and warming tools (release)"
  (cd "$ROOT" && cargo build --release --quiet --bin kbgate --example seed_keys --example warm_keys \
    --example bare_proxy)
}

# ---------- the servers ----------

start_upstream() {
  local dir="$WORK/upstream"
  mkdir -p "$dir/www"
  cp "$HERE/article.json" "$dir/www/"
  pick_port upstream
  render "$HERE/upstream.conf" "$dir/nginx.conf" DIR="$dir" PORT="${PORT[upstream]}" USER="$(id -un)"
  start_server upstream "$dir/stdout.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
  wait_for_port "${PORT[upstream]}" upstream
  PORT[A]=${PORT[upstream]}
}

# Arm H: the bare proxy (it checks no key; it gets C's like every arm).
start_bare_proxy() {
  pick_port H
  start_server H "$WORK/bare_proxy.log" "$BARE" "127.0.0.1:${PORT[H]}" "http://127.0.0.1:${PORT[upstream]}"
  wait_for_port "${PORT[H]}" H
  KEY[H]=${KEY[C]}
}

# Writes $WORK/name/nginx.conf: nginx as the auth proxy of arm B, on its own port, accepting `key`.
nginx_proxy_config() {
  local name=$1 key=$2 dir="$WORK/$1" access_log=off
  mkdir -p "$dir"
  [[ $LOGS == on ]] && access_log="$dir/access.log"
  pick_port "$name"
  render "$HERE/proxy.conf" "$dir/nginx.conf" DIR="$dir" PORT="${PORT[$name]}" USER="$(id -un)" \
    UPSTREAM_PORT="${PORT[upstream]}" KEY="$key" UPSTREAM_TOKEN="$UPSTREAM_TOKEN" \
    ACCESS_LOG="$access_log"
}

start_nginx_proxy() {
  local dir="$WORK/B"
  nginx_proxy_config B "${KEY[C]}"
  start_server B "$dir/stdout.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
  wait_for_port "${PORT[B]}" B
}

start_redis() {
  mkdir -p "$WORK/redis"
  pick_port redis
  start_server redis "$WORK/redis/redis.log" redis-server --port "${PORT[redis]}" --bind 127.0.0.1 \
    --save "" --appendonly no --dir "$WORK/redis"
  wait_for_port "${PORT[redis]}" redis
}

# Limits the load never reaches, for every key of arm L (key_defaults): what deciding a rate
# limit and a quota costs, with no refusal.
LIMITED_DEFAULTS='key_defaults: { rate_limit: { requests: 1000000000000, window_seconds: 1, burst: 1000000000 }, quota: { requests: 1000000000000, period: month, counts: all } }'

# Writes a kbgate config for `name`: its own ports and store, the shipped route table, and
# `extra` YAML if given.
kbgate_config() {
  local name=$1 store=$2 max_age=$3 extra=${4:-} dir="$WORK/$1" level=warn
  mkdir -p "$dir"
  [[ $LOGS == on ]] && level=info
  [[ $store == embedded ]] && store="{ embedded: { path: $dir/kbgate.db } }"
  [[ $store == redis ]] && store="{ redis: { url: \"redis://127.0.0.1:${PORT[redis]}/0\", prefix: \"$name:\" } }"
  pick_port "$name"
  pick_port "$name-admin"
  render "$HERE/kbgate.yaml.in" "$dir/kbgate.yaml" PORT="${PORT[$name]}" \
    ADMIN_PORT="${PORT[$name-admin]}" ADMIN_TOKEN="$ADMIN_TOKEN" UPSTREAM_PORT="${PORT[upstream]}" \
    UPSTREAM_TOKEN="$UPSTREAM_TOKEN" STORE="$store" MAX_AGE="$max_age" LOG_LEVEL="$level"
  [[ -n $EXTRA_CONFIG ]] && printf '%s\n' "$EXTRA_CONFIG" >>"$dir/kbgate.yaml"
  [[ -n $extra ]] && printf '%s\n' "$extra" >>"$dir/kbgate.yaml"
  sed -n '/^routes:/,$p' "$ROOT/config/kbgate.yaml" >>"$dir/kbgate.yaml"
}

# Creates `count` keys in `name`'s store; their secrets go to $WORK/name/keys.txt.
seed() {
  local name=$1 count=$2
  "$SEED" --config "$WORK/$name/kbgate.yaml" --count "$count" --out "$WORK/$name/keys.txt" \
    2>>"$WORK/$name/seed.log"
  tail -1 "$WORK/$name/seed.log" >&2
}

start_kbgate() {
  local name=$1
  start_server "$name" "$WORK/$name/kbgate.log" "$KBGATE" serve --config "$WORK/$name/kbgate.yaml"
  wait_for_port "${PORT[$name]}" "$name"
  curl -fsS -o /dev/null --retry 20 --retry-delay 0 --retry-connrefused --max-time 5 \
    "http://127.0.0.1:${PORT[$name-admin]}/readyz" || die "$name is not ready"
  # A Redis-backed gateway caches nothing until its change feed is subscribed.
  if grep -q 'redis:' "$WORK/$name/kbgate.yaml"; then
    for _ in $(seq 50); do
      grep -q 'listening for key changes' "$WORK/$name/kbgate.log" && return
      sleep 0.1
    done
    # With LOGS=off the line is not logged: the 5 s above were ample.
  fi
}

# A kbgate with its own store, seeded with `count` keys, the first one being the arm's key.
kbgate_arm() {
  local name=$1 store=$2 max_age=$3 count=$4 extra=${5:-}
  kbgate_config "$name" "$store" "$max_age" "$extra"
  seed "$name" "$count"
  KEY[$name]=$(head -1 "$WORK/$name/keys.txt")
  start_kbgate "$name"
}

# The arms every mode but `profile` compares: the upstream itself (A), kbgate with its key in the
# hot tier (C), and nginx (B) and the bare proxy (H), all presented C's key.
start_compared_arms() {
  start_upstream
  kbgate_arm C embedded 30s 1
  kbgate_arm L embedded 30s 1 "$LIMITED_DEFAULTS"
  KEY[A]=${KEY[C]}
  KEY[B]=${KEY[C]}
  start_nginx_proxy
  start_bare_proxy
}

start_arms() {
  say "starting the upstream, nginx (B), redis-server and the kbgate arms on CPU $SERVER_CPU"
  start_compared_arms
  start_redis
  kbgate_arm D-embedded embedded 0s 1
  kbgate_arm D-redis redis 0s 1
  # E isolates what the number of keys costs on the hit path: a max_age above the run's length
  # keeps all of them hot (with the shipped 30s, entries expire and re-read the store).
  kbgate_arm E embedded 1h "$E_KEYS"
  sed "s|^|$(url_of E)?key=|" "$WORK/E/keys.txt" >"$WORK/E/urls.txt"
}

# Every arm must answer 200 with its key: a 401 is cheap and would flatter the figures.
preflight() {
  local arm status key
  for arm in "${ARMS[@]}"; do
    key=${KEY[$arm]}
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "$(url_of "$arm")")
    [[ $status == 200 ]] || die "arm $arm answered $status, not 200"
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${key}x" "$(url_of "$arm")")
    [[ $arm == A || $arm == H || $status == 401 ]] || die "arm $arm let a wrong key through ($status)"
  done
}

# Presents the first `limit` keys of `name`'s key file once each (fills its hot tier).
warm_keys() {
  local name=$1 limit=$2
  taskset -c "$CLIENT_CPU" "$WARM" --url "$(url_of "$name")" --keys "$WORK/$name/keys.txt" \
    --limit "$limit" --concurrency "$CONNECTIONS" 2>&1 || die "warming $name failed"
}

# ---------- load generators ----------

# Idle and total jiffies of one CPU, from /proc/stat.
cpu_ticks() {
  awk -v cpu="cpu$1" '$1 == cpu { t = 0; for (i = 2; i <= NF; i++) t += $i; print $5 + $6, t }' /proc/stat
}

# Percent of the time a CPU was busy between two cpu_ticks readings (whoever kept it busy).
busy_percent() {
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ")
    printf "%.0f", 100 * (1 - (y[1] - x[1]) / (y[2] - x[2])) }'
}

# Closed loop: wrk as fast as the arm answers. Prints "rps errors server_busy% client_busy%":
# a server CPU below ~95% busy means the generator, not the arm, set the pace.
closed_loop() {
  local arm=$1 seconds=$2 out line requests duration errors bad
  local args=(-t1 -c"$CONNECTIONS" -d"${seconds}s" -s "$HERE/load.lua")
  local server_before client_before
  server_before=$(cpu_ticks "$SERVER_CPU")
  client_before=$(cpu_ticks "$CLIENT_CPU")
  if [[ $arm == E ]]; then
    out=$(KEYS_FILE="$WORK/E/keys.txt" taskset -c "$CLIENT_CPU" wrk "${args[@]}" "$(url_of E)")
  else
    out=$(taskset -c "$CLIENT_CPU" wrk "${args[@]}" -H "Authorization: Bearer ${KEY[$arm]}" "$(url_of "$arm")")
  fi
  line=$(grep '^RESULT' <<<"$out") || die "wrk said: $out"
  requests=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$line")
  duration=$(sed -E 's/.*duration_us=([0-9]+).*/\1/' <<<"$line")
  errors=$(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$line")
  bad=$(sed -E 's/.*bad_status=([0-9]+).*/\1/' <<<"$line")
  echo "$(awk -v r="$requests" -v d="$duration" 'BEGIN { printf "%.0f", r / (d / 1e6) }') $((errors + bad))" \
    "$(busy_percent "$server_before" "$(cpu_ticks "$SERVER_CPU")")" \
    "$(busy_percent "$client_before" "$(cpu_ticks "$CLIENT_CPU")")"
}

# Open loop: oha sends `rate` requests/s whatever the latency; latency correction measures each
# request from when it should have been sent. Prints "achieved_rps p50_ms p99_ms p99.9_ms errors
# server_busy% client_busy%": a generator near 100% busy falls behind and its figures mislead.
open_loop() {
  local arm=$1 seconds=$2 rate=$3 json figures server_before client_before
  server_before=$(cpu_ticks "$SERVER_CPU")
  client_before=$(cpu_ticks "$CLIENT_CPU")
  local args=(-z "${seconds}s" -q "$rate" -c "$CONNECTIONS" --latency-correction --no-tui
    --output-format json)
  if [[ $arm == E ]]; then
    # oha cannot vary a header per request: E's keys go in ?key= (same verification, plus the
    # query rewrite), one URL per key, picked at random.
    json=$(taskset -c "$CLIENT_CPU" oha "${args[@]}" --urls-from-file "$WORK/E/urls.txt")
  else
    json=$(taskset -c "$CLIENT_CPU" oha "${args[@]}" -H "Authorization: Bearer ${KEY[$arm]}" "$(url_of "$arm")")
  fi
  figures=$(jq -r '[.summary.requestsPerSec,
          .latencyPercentiles.p50 * 1000, .latencyPercentiles.p99 * 1000,
          .latencyPercentiles["p99.9"] * 1000,
          ([.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0)
            + ([.errorDistribution // {} | to_entries[] | select(.key | test("deadline") | not)
                | .value] | add // 0)]
         | map(tostring) | join(" ")' <<<"$json")
  echo "$figures $(busy_percent "$server_before" "$(cpu_ticks "$SERVER_CPU")")" \
    "$(busy_percent "$client_before" "$(cpu_ticks "$CLIENT_CPU")")"
}

# ---------- the phases ----------

# The open-loop rate that RATE asks for, from the closed-loop medians.
open_loop_rate() {
  case $RATE in
  half-slowest) printf '%s\n' "$(med closed A rps)" "$(med closed B rps)" "$(med closed C rps)" |
    sort -g | awk 'NR == 1 { printf "%d", $1 / 2 }' ;;
  half-a) awk -v r="$(med closed A rps)" 'BEGIN { printf "%d", r / 2 }' ;;
  *[!0-9]* | "") die "RATE must be a number, half-slowest or half-a, not '$RATE'" ;;
  *) echo "$RATE" ;;
  esac
}

closed_phase() {
  local repeat arm rps errors server client result
  for repeat in $(seq "$REPEATS"); do
    for arm in $(printf '%s\n' "${ARMS[@]}" | shuf); do
      closed_loop "$arm" "$WARMUP" >/dev/null
      result=$(closed_loop "$arm" "$DURATION")
      read -r rps errors server client <<<"$result"
      record closed "$arm" "$repeat" rps "$rps"
      record closed "$arm" "$repeat" errors "$errors"
      record closed "$arm" "$repeat" server_cpu "$server"
      record closed "$arm" "$repeat" client_cpu "$client"
      say "closed loop, repeat $repeat/$REPEATS, $arm: $rps req/s, $errors errors, CPU busy: servers $server%, generator $client%"
    done
  done
}

open_phase() {
  local rate=$1 repeat arm achieved p50 p99 p999 bad server client result
  for repeat in $(seq "$REPEATS"); do
    for arm in $(printf '%s\n' "${ARMS[@]}" | shuf); do
      open_loop "$arm" "$WARMUP" "$rate" >/dev/null
      result=$(open_loop "$arm" "$DURATION" "$rate")
      read -r achieved p50 p99 p999 bad server client <<<"$result"
      record open "$arm" "$repeat" achieved "$achieved"
      record open "$arm" "$repeat" p50 "$p50"
      record open "$arm" "$repeat" p99 "$p99"
      record open "$arm" "$repeat" p999 "$p999"
      record open "$arm" "$repeat" errors "$bad"
      record open "$arm" "$repeat" server_cpu "$server"
      record open "$arm" "$repeat" client_cpu "$client"
      say "open loop at $rate req/s, repeat $repeat/$REPEATS, $arm: p50 $(fmt "$p50" 3) ms, p99 $(fmt "$p99" 3) ms, p99.9 $(fmt "$p999" 3) ms, achieved $(fmt "$achieved") req/s, CPU busy: servers $server%, generator $client%"
    done
  done
}

# How many connections nginx (the upstream) accepted, and requests it answered: stub_status.
upstream_accepts() {
  curl -fsS "http://127.0.0.1:${PORT[upstream]}/nginx_status" | awk 'NR == 3 { print $1 }'
}
upstream_requests() {
  curl -fsS "http://127.0.0.1:${PORT[upstream]}/nginx_status" | awk 'NR == 3 { print $3 }'
}

# Upstream connections a proxy opens for 10k requests: one batch after the benchmark (its pool
# may have idled out and refills), then a second batch right after (a warm pool).
connection_reuse() {
  local arm batch before after
  for arm in B C; do
    for batch in first second; do
      before=$(upstream_accepts)
      taskset -c "$CLIENT_CPU" oha -n 10000 -c "$CONNECTIONS" --no-tui --output-format json \
        -H "Authorization: Bearer ${KEY[$arm]}" "$(url_of "$arm")" >/dev/null
      after=$(upstream_accepts)
      # The second status request's own connection is counted in `after`.
      record reuse "$arm" 1 "$batch" $((after - before - 1))
    done
  done
}

# Gateway RSS with many keys in the store and many in the hot tier, for each store. With Redis the
# gateway holds no store data, so its RSS is the hot tier and the rest of the process; the
# embedded store adds redb's page cache (up to redb's default 1 GiB) of what was read.
memory() {
  local store name
  for store in embedded redis; do
    name=rss-$store
    say "memory: $RSS_KEYS keys in the $store store, $RSS_HOT warmed into the hot tier"
    kbgate_config "$name" "$store" 1h
    seed "$name" "$RSS_KEYS"
    record memory "$name" 1 seed_seconds "$(sed -nE 's/^seeded .* in ([0-9.]+)s .*/\1/p' "$WORK/$name/seed.log")"
    start_kbgate "$name"
    record memory "$name" 1 rss_cold_mib "$(rss_mib "${PID_OF[$name]}")"
    say "warming: $(warm_keys "$name" "$RSS_HOT")"
    record memory "$name" 1 rss_warm_mib "$(rss_mib "${PID_OF[$name]}")"
    kill -TERM "${PID_OF[$name]}"
    wait "${PID_OF[$name]}" || true
  done
  record memory rss-embedded 1 store_mib "$(du -m "$WORK/rss-embedded/kbgate.db" | cut -f1)"
  record memory rss-redis 1 store_mib "$(redis-cli -p "${PORT[redis]}" info memory |
    awk -F: '/^used_memory:/ { printf "%.0f", $2 / 1048576 }')"
  record memory E 1 rss_warm_mib "$(rss_mib "${PID_OF[E]}")"
  record memory C 1 rss_mib "$(rss_mib "${PID_OF[C]}")"
}

# ---------- the profile of arm C ----------

# perf samples (cpu-clock: hardware counters are often missing in VMs), syscalls per request,
# allocations per request. Writes a markdown section to stdout.
profile_c() {
  local pid=${PID_OF[C]} dir="$WORK/profile"
  mkdir -p "$dir"
  say "profile: perf record on arm C under closed-loop load"
  closed_loop C "$WARMUP" >/dev/null
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"$((DURATION + 2))s" -s "$HERE/load.lua" \
    -H "Authorization: Bearer ${KEY[C]}" "$(url_of C)" >"$dir/wrk-perf.txt" &
  local load=$!
  sleep 1
  perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$pid" -o "$dir/perf.data" \
    -- sleep "$DURATION" 2>"$dir/perf-record.log" || true
  wait "$load"

  say "profile: syscalls per request"
  # perf trace starts the load itself once it is attached, so the window holds exactly that
  # load; the upstream's request counter says how many requests went through.
  local requests before
  before=$(upstream_requests)
  perf trace -s -p "$pid" -o "$dir/perf-trace.txt" -- taskset -c "$CLIENT_CPU" oha -n 20000 \
    -c "$CONNECTIONS" --no-tui --output-format quiet -H "Authorization: Bearer ${KEY[C]}" \
    "$(url_of C)" >/dev/null 2>&1 || true
  requests=$(($(upstream_requests) - before - 1))

  perf report -i "$dir/perf.data" --children --sort symbol --percent-limit 0 --stdio -g none \
    2>/dev/null | grep -v '^#' | sed -E 's/([[:space:]]+-)*[[:space:]]*$//' >"$dir/children.txt"

  echo "## Profile of arm C (kbgate, key in the hot tier)"
  echo
  echo "CPU samples of the kbgate process (perf, cpu-clock at 999 Hz with DWARF call stacks,"
  echo "${DURATION}s of closed-loop load). Share of all its samples; *incl.* counts callees."
  echo "Kernel time on loopback includes delivering each segment to the peer (softirq in the"
  echo "sender's context), and in a VM samples of interrupt-disabled code land on the"
  echo "re-enabling instruction (_raw_spin_unlock_irqrestore)."
  echo
  profile_breakdown "$dir/children.txt"
  echo
  echo "Self time by function, top 30:"
  echo
  echo '```'
  perf report -i "$dir/perf.data" --no-children --sort dso,symbol --percent-limit 0.3 --stdio \
    -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | sed -E 's/([[:space:]]+-)*[[:space:]]*$//' |
    cut -c1-160 | awk 'NR <= 30'
  echo '```'
  echo
  echo "Syscalls of the kbgate process while it served $requests requests (perf trace -s; the tracer slows it, the counts are exact):"
  echo
  echo '```'
  syscall_summary "$dir/perf-trace.txt" "$requests"
  echo '```'
  echo
  if command -v valgrind >/dev/null; then
    allocations_per_request
    echo
    instructions_per_request
  fi
}

# User-space instructions per request of B, H and C: each runs again under valgrind's callgrind,
# counting only while it serves $n requests after a warm-up. Exact and repeatable where CPU time
# on a VM is not; the kernel's share is not counted (the three make the same syscalls per
# request: 2 recv, 2 writev). nginx runs without its master process, so callgrind sees the worker.
instructions_per_request() {
  local dir="$WORK/profile" n=10000 arm
  local -A counted
  say "profile: instructions per request of B, H and C (valgrind callgrind; slow)"
  kbgate_config cg-C embedded 30s
  seed cg-C 1
  KEY[cg-C]=$(head -1 "$WORK/cg-C/keys.txt")
  nginx_proxy_config cg-B "${KEY[cg-C]}"
  pick_port cg-H
  callgrind_run cg-B $n nginx -g 'master_process off;' -p "$WORK/cg-B" -e "$WORK/cg-B/error.log" \
    -c "$WORK/cg-B/nginx.conf"
  counted[B]=$INSTRUCTIONS
  callgrind_run cg-H $n "$BARE" "127.0.0.1:${PORT[cg-H]}" "http://127.0.0.1:${PORT[upstream]}"
  counted[H]=$INSTRUCTIONS
  callgrind_run cg-C $n "$KBGATE" serve --config "$WORK/cg-C/kbgate.yaml"
  counted[C]=$INSTRUCTIONS
  # L: C's config with limits the load never reaches, presented C's key (key_defaults apply).
  kbgate_config cg-L embedded 30s "$LIMITED_DEFAULTS"
  cp "$WORK/cg-C/kbgate.db" "$WORK/cg-L/kbgate.db"
  callgrind_run cg-L $n "$KBGATE" serve --config "$WORK/cg-L/kbgate.yaml"
  counted[L]=$INSTRUCTIONS
  echo "User-space instructions per request (valgrind callgrind, $n requests after 2000 of warm-up):"
  echo
  echo "| arm | instructions per request | vs B |"
  echo "|---|---:|---:|"
  for arm in B H C L; do
    echo "| $arm $(describe "$arm") | ${counted[$arm]} | $(ratio "${counted[$arm]}" "${counted[B]}") |"
  done
  echo
  echo "A rate limit and a quota (L) against none (C): $(ratio "${counted[L]}" "${counted[C]}") times the instructions."
  echo
  echo "kbgate's own work per request (C − H: key check, authorization, metering, access log,"
  echo "header hygiene): $((counted[C] - counted[H])) instructions."
}

# Runs a server under callgrind on port PORT[name], counting only while it serves `n` requests
# presented KEY[cg-C] (after 2000 uncounted); sets INSTRUCTIONS to its instructions per request.
callgrind_run() {
  local name=$1 n=$2 dir="$WORK/profile" total
  shift 2
  # One worker thread, as on the server CPU (valgrind may report more CPUs than taskset allows).
  start_server "$name" "$dir/$name.log" env TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind \
    --instr-atstart=no --callgrind-out-file="$dir/$name.callgrind" "$@"
  for _ in $(seq 600); do
    curl -s -o /dev/null "$(url_of "$name")" && break
    kill -0 "${PID_OF[$name]}" 2>/dev/null || die "$name exited under valgrind (see $dir/$name.log)"
    sleep 0.1
  done
  local load=(oha -c "$CONNECTIONS" --no-tui --output-format quiet
    -H "Authorization: Bearer ${KEY[cg-C]}" "$(url_of "$name")")
  taskset -c "$CLIENT_CPU" "${load[@]}" -n 2000 >/dev/null 2>&1
  callgrind_control -i on "${PID_OF[$name]}" >/dev/null 2>&1 || die "callgrind_control: no $name"
  taskset -c "$CLIENT_CPU" "${load[@]}" -n "$n" >/dev/null 2>&1
  callgrind_control -i off "${PID_OF[$name]}" >/dev/null 2>&1 || die "callgrind_control: no $name"
  kill -TERM "${PID_OF[$name]}"
  wait "${PID_OF[$name]}" || true
  total=$(callgrind_annotate "$dir/$name.callgrind" 2>/dev/null |
    awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  INSTRUCTIONS=$((total / n))
}

# The request path's parts, by the inclusive share of the frames that stand for them.
profile_breakdown() {
  awk '
    function pct(s) { sub("%", "", s); return s + 0 }
    # The largest inclusive share among symbols matching re (the outermost such frame).
    function incl(re,   best, i) { best = -1; for (i = 1; i <= n; i++) if (sym[i] ~ re && ch[i] > best) best = ch[i]; return best }
    function incl0(re,   v) { v = incl(re); return v < 0 ? 0 : v }
    function selfsum(re,   t, i) { t = 0; for (i = 1; i <= n; i++) if (sym[i] ~ re) t += sf[i]; return t }
    function row(label, v) { if (v < 0) printf "| %s | - |\n", label; else printf "| %s | %.1f%% |\n", label, v }
    NF >= 4 && $1 ~ /%$/ {
      n++; ch[n] = pct($1); sf[n] = pct($2); kind[n] = $3
      s = $0; sub(/^[[:space:]]*[0-9.]+%[[:space:]]+[0-9.]+%[[:space:]]+\[.\][[:space:]]+/, "", s); sym[n] = s
      if ($3 == "[k]") kernel += sf[n]
    }
    END {
      print "| part of the work | share |"
      print "|---|---:|"
      row("kernel, all (self)", kernel)
      row("socket writes: `writev` to clients and upstream (incl.)", incl("^__GI___writev$|^writev$"))
      row("socket reads: `recv` (incl.)", incl("^__libc_recv$|^recv$"))
      row("access log: one tracing event per request (incl.)", incl("^tracing_core::event::Event::dispatch$"))
      row("  of which formatting the line (incl.)", incl("FormatEvent<S,N>>::format_event$"))
      row("  of which the write to stderr (incl.)", incl("Stderr as std::io::Write>::write_all$"))
      row("X-Request-Id: 16 random bytes, hex (incl.)", incl("^kbgate::gateway::request_id$"))
      row("upstream client: `send_request` (incl.)", incl("client::legacy::client::Client<C,B>::send_request"))
      row("upstream request: URI, client headers that may pass, forwarding headers (incl.)", incl("^kbgate::upstream::Upstream::upstream_request$"))
      row("  of which the URI: `target_uri` (incl.)", incl("^kbgate::upstream::Upstream::target_uri$"))
      row("response headers: `remove_hop_by_hop` (incl.)", incl("^kbgate::upstream::remove_hop_by_hop$"))
      row("key: `extract_key` + `is_well_formed` (incl.)", incl0("^kbgate::gateway::key_source::extract_key$") + incl0("^kbgate::keys::secret::is_well_formed$"))
      row("key: blake3 + hot-tier lookup (incl.)", incl0("^blake3::hash$") + incl0("^kbgate::keys::keyring::Keyring::cached$"))
      row("routes: `canonicalize_path` + `RouteTable::lookup` (incl.)", incl0("^kbgate::path::canonicalize_path$") + incl0("^kbgate::authz::routes::RouteTable::lookup$"))
      row("usage: `UsageRecorder::record` (incl.)", incl("^kbgate::usage::UsageRecorder::record$"))
      row("allocator: malloc/free (glibc) or mi_* (mimalloc) (self)", selfsum("^(malloc|_int_malloc|malloc_consolidate|cfree.*|free|_int_free|realloc|_int_realloc|__libc_(malloc|free|realloc)|_?mi_.*)$"))
      row("memmove / memcpy (self)", selfsum("^__mem(move|cpy)"))
      row("clock_gettime (self, vDSO + libc)", selfsum("clock_gettime"))
    }' "$1"
}

# Totals of a `perf trace -s` summary: calls per syscall, summed over threads, per request.
syscall_summary() {
  local file=$1 requests=$2
  awk -v n="$requests" '
    $1 ~ /^[a-z_0-9]+$/ && $2 ~ /^[0-9]+$/ && NF >= 8 { calls[$1] += $2; all += $2 }
    END {
      printf "%-16s %10s %12s\n", "syscall", "calls", "per request"
      for (s in calls) printf "%-16s %10d %12.2f\n", s, calls[s], calls[s] / n | "sort -k2 -nr"
      close("sort -k2 -nr")
      printf "%-16s %10d %12.2f\n", "all", all, all / n
    }' "$file"
}

# Heap allocations per request: a gateway like C (its own store and ports) under valgrind's DHAT,
# twice, with a different number of requests; the difference divided by the difference in
# requests leaves out start-up and shutdown. DHAT sees only malloc, so this gateway is built
# with the system allocator (without the default mimalloc feature), in its own target dir.
allocations_per_request() {
  local dir="$WORK/profile" n small=500 large=2500 blocks=() bytes=()
  local kbgate="$ROOT/target/system-alloc/release/kbgate"
  say "profile: building kbgate with the system allocator for DHAT"
  (cd "$ROOT" && cargo build --release --quiet --no-default-features --bin kbgate \
    --target-dir "$ROOT/target/system-alloc")
  say "profile: allocations per request (valgrind DHAT; slow)"
  kbgate_config dhat embedded 30s
  seed dhat 1
  KEY[dhat]=$(head -1 "$WORK/dhat/keys.txt")
  for n in $small $large; do
    start_server "dhat-$n" "$dir/dhat-$n.log" valgrind --tool=dhat --num-callers=40 \
      --dhat-out-file="$dir/dhat-$n.json" "$kbgate" serve --config "$WORK/dhat/kbgate.yaml"
    curl -fs -o /dev/null --retry 60 --retry-delay 1 --retry-connrefused --max-time 10 \
      "http://127.0.0.1:${PORT[dhat-admin]}/readyz" || die "kbgate under valgrind did not start"
    taskset -c "$CLIENT_CPU" oha -n "$n" -c 4 --no-tui --output-format json \
      -H "Authorization: Bearer ${KEY[dhat]}" "$(url_of dhat)" >/dev/null
    kill -TERM "${PID_OF[dhat-$n]}"
    wait "${PID_OF[dhat-$n]}" || true
    blocks+=("$(jq '[.pps[].tbk] | add' "$dir/dhat-$n.json")")
    bytes+=("$(jq '[.pps[].tb] | add' "$dir/dhat-$n.json")")
  done
  echo "Heap allocations per request (valgrind DHAT; the difference between runs of $small and $large requests):"
  echo
  awk -v b1="${blocks[0]}" -v b2="${blocks[1]}" -v y1="${bytes[0]}" -v y2="${bytes[1]}" \
    -v n1="$small" -v n2="$large" 'BEGIN {
      printf "- %.1f allocations and %.0f bytes allocated per request\n", (b2 - b1) / (n2 - n1), (y2 - y1) / (n2 - n1) }'
  echo
  echo "Allocations per request by the innermost kbgate function on their stack (the rest is"
  echo "hyper, tokio and the client pool working for the request):"
  echo
  echo "| innermost kbgate frame | allocations per request |"
  echo "|---|---:|"
  jq -nr --slurpfile a "$dir/dhat-$small.json" --slurpfile b "$dir/dhat-$large.json" \
    --argjson n $((large - small)) '
    def frame: sub("^0x[0-9A-Fa-f]+: "; "") | sub(" \\(in .*\\)$"; "");
    def groups: . as $d | [.pps[] | {tbk,
        key: ([.fs[] | $d.ftbl[.] | frame | select(test("^<?kbgate::"))] | .[0] // "(no kbgate frame)")}]
      | group_by(.key) | map({key: .[0].key, value: (map(.tbk) | add)}) | from_entries;
    ($a[0] | groups) as $x | $b[0] | groups | to_entries
    | map({key, per: ((.value - ($x[.key] // 0)) / $n)}) | map(select(.per >= 0.5))
    | sort_by(-.per)[] | "| `\(.key | .[0:110])` | \(.per * 10 | round / 10) |"'
  echo
  echo "Top allocation sites of the $large-request run (allocations, bytes, nearest non-allocator frames):"
  echo
  echo '```'
  jq -r '. as $d | [.pps[] | {tbk, tb, frames: [.fs[] | $d.ftbl[.]]}] | sort_by(-.tbk) | .[:25][]
    | "\(.tbk)\t\(.tb)\t\(.frames
        | map(sub("^0x[0-9A-Fa-f]+: "; "") | sub(" \\(in .*\\)$"; ""))
        | map(select(test("^(alloc::|__rust|malloc|realloc|calloc|<alloc::|core::ptr)") | not))
        | .[:3] | join("  <-  "))"' "$dir/dhat-$large.json" | cut -c1-320
  echo '```'
}

# ---------- the report ----------

fmt() { awk -v v="$1" -v d="${2:-0}" 'BEGIN { if (v == "nan" || v == "") print "-"; else printf "%.*f", d, v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.3f", a - b }'; }

describe() {
  case $1 in
  A) echo "direct to the upstream" ;;
  B) echo "nginx auth proxy (static key map, keep-alive)" ;;
  C) echo "kbgate, key in the hot tier" ;;
  D-embedded) echo "kbgate, hot tier off, embedded store" ;;
  D-redis) echo "kbgate, hot tier off, Redis store" ;;
  E) echo "kbgate, $E_KEYS keys, random key per request" ;;
  H) echo "hyper proxy doing nothing else (kbgate's stack floor)" ;;
  L) echo "kbgate, key in the hot tier with a rate limit and a quota (never reached)" ;;
  esac
}

report() {
  local rate=$1 arm
  echo "# kbgate load benchmark, $STAMP"
  echo
  echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
  echo "- load average at start: $LOAD_START; at end: $(cut -d' ' -f1-3 /proc/loadavg) (a busy machine makes every figure unreliable)"
  echo "- commit: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "- servers on CPU $SERVER_CPU, load generators on CPU $CLIENT_CPU; $CONNECTIONS connections; $REPEATS repeats of ${DURATION}s after ${WARMUP}s of warm-up, arm order shuffled each repeat; medians"
  echo "- closed loop (max req/s): $( (wrk -v 2>&1 || true) | head -1 | cut -d' ' -f1-2); open loop (latencies): $(oha --version) at $rate req/s ($RATE) with latency correction; logs: $LOGS${EXTRA_CONFIG:+; extra kbgate config: \`$EXTRA_CONFIG\`}"
  echo
  echo "| arm | what | max req/s (closed) | vs A | CPU busy % servers / generator | p50 ms | p99 ms | p99.9 ms | achieved req/s | CPU busy % servers / generator | errors |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  local a_rps
  a_rps=$(med closed A rps)
  for arm in "${ARMS[@]}"; do
    local rps achieved
    rps=$(med closed "$arm" rps)
    achieved=$(med open "$arm" achieved)
    local flag=""
    awk -v a="$achieved" -v r="$rate" 'BEGIN { exit !(a < 0.95 * r) }' && flag=" (saturated)"
    echo "| $arm | $(describe "$arm") | $(fmt "$rps") | $(ratio "$rps" "$a_rps") | $(fmt "$(med closed "$arm" server_cpu)") / $(fmt "$(med closed "$arm" client_cpu)") | $(fmt "$(med open "$arm" p50)" 3) | $(fmt "$(med open "$arm" p99)" 3) | $(fmt "$(med open "$arm" p999)" 3) | $(fmt "$achieved")$flag | $(fmt "$(med open "$arm" server_cpu)") / $(fmt "$(med open "$arm" client_cpu)") | $(($(total closed "$arm" errors) + $(total open "$arm" errors))) |"
  done
  echo
  echo "*vs A*: share of the direct throughput left. *CPU busy*: the servers' CPU and the generator's"
  echo "during the closed loop; servers below ~95% means the generator set the pace. *saturated*:"
  echo "the arm could not keep up with the open-loop rate, so its latencies are mostly queueing."
  echo "*errors*: non-2xx answers and socket errors over every run (requests still in flight when an"
  echo "open-loop run ends are not counted). E's open loop presents its keys as \`?key=\` (oha cannot"
  echo "vary a header per request); its closed loop uses \`Authorization: Bearer\` like the others."
  echo
  local c=C b=B a=A
  echo "**kbgate (C) against the alternatives**"
  echo
  echo "| | C/A | C/B |"
  echo "|---|---:|---:|"
  echo "| max throughput | $(ratio "$(med closed $c rps)" "$(med closed $a rps)") | $(ratio "$(med closed $c rps)" "$(med closed $b rps)") |"
  echo
  echo "Repeat by repeat (the arms of a repeat run back to back): C/B $(paired $c $b); L/B $(paired L $b)."
  echo
  echo "The floor of kbgate's stack, H (hyper proxying and nothing else), against nginx: H/B"
  echo "$(ratio "$(med closed H rps)" "$(med closed $b rps)"); kbgate keeps C/H $(ratio "$(med closed $c rps)" "$(med closed H rps)") of it."
  echo
  echo "| added latency at $rate req/s (ms) | C − A (kbgate) | B − A (nginx auth proxy) |"
  echo "|---|---:|---:|"
  local p
  for p in p50 p99 p999; do
    echo "| ${p/p999/p99.9} | $(minus "$(med open $c $p)" "$(med open $a $p)") | $(minus "$(med open $b $p)" "$(med open $a $p)") |"
  done
  echo
  if grep -q $'^reuse\t' "$RAW"; then
    echo "**Upstream connections opened per 10k requests** ($CONNECTIONS client connections; nginx stub_status accepts):"
    echo
    echo "| proxy | first 10k after the benchmark | next 10k |"
    echo "|---|---:|---:|"
    for arm in B C; do
      echo "| $arm | $(med reuse $arm first) | $(med reuse $arm second) |"
    done
    echo
    echo "nginx (B) closes an upstream keep-alive connection after 1000 requests by default"
    echo "(\`keepalive_requests\` in its \`upstream\` block); the upstream itself allows a million."
    echo
  fi
  if grep -q $'^memory\t' "$RAW"; then
    echo "**Gateway memory (VmRSS)**"
    echo
    echo "| store | $RSS_KEYS keys seeded in | store size | RSS after start | RSS with $RSS_HOT keys in the hot tier |"
    echo "|---|---:|---:|---:|---:|"
    echo "| embedded (redb file) | $(med memory rss-embedded seed_seconds) s | $(med memory rss-embedded store_mib) MiB | $(med memory rss-embedded rss_cold_mib) MiB | $(med memory rss-embedded rss_warm_mib) MiB |"
    echo "| Redis (used_memory) | $(med memory rss-redis seed_seconds) s | $(med memory rss-redis store_mib) MiB | $(med memory rss-redis rss_cold_mib) MiB | $(med memory rss-redis rss_warm_mib) MiB |"
    echo
    echo "After the benchmark: arm E ($E_KEYS keys in an embedded store, all hot) $(med memory E rss_warm_mib) MiB; arm C (one key) $(med memory C rss_mib) MiB."
    echo
  fi
  echo "<details><summary>Every measured run (phase, arm, repeat, metric, value)</summary>"
  echo
  echo '```'
  cat "$RAW"
  echo '```'
  echo
  echo "</details>"
}

# ---------- main ----------

main() {
  local mode=${1:-bench}
  [[ $mode == bench || $mode == profile || $mode == quick || $mode == instructions ]] ||
    die "usage: bash benches/load/run.sh [profile|quick|instructions]"
  [[ $(nproc) -ge 2 ]] || die "needs 2 CPUs: one for the servers, one for the load generator"
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  awk -v l="${LOAD_START%% *}" 'BEGIN { exit !(l > 0.5) }' &&
    say "warning: load average $LOAD_START: other work is running, the figures will be noisy"
  local started=$SECONDS rate
  ensure_tools
  build
  mkdir -p "$RESULTS_DIR"
  : >"$RAW"

  if [[ $mode == instructions ]]; then
    start_upstream
    mkdir -p "$WORK/profile"
    RESULTS="$RESULTS_DIR/$STAMP-instructions.md"
    instructions_per_request >"$RESULTS"
    cat "$RESULTS"
    say "written to ${RESULTS#"$ROOT"/} in $((SECONDS - started)) s"
    return
  fi

  if [[ $mode == profile ]]; then
    ARMS=(C)
    start_upstream
    kbgate_arm C embedded 30s 1
    preflight
    RESULTS="$RESULTS_DIR/$STAMP-profile.md"
    profile_c >"$RESULTS"
    cat "$RESULTS"
    say "written to ${RESULTS#"$ROOT"/} in $((SECONDS - started)) s"
    return
  fi

  if [[ $mode == quick ]]; then
    ARMS=(A B C H L)
    start_compared_arms
    preflight
    closed_phase
    rate=$(open_loop_rate)
    open_phase "$rate"
    RESULTS="$RESULTS_DIR/$STAMP-quick.md"
    report "$rate" >"$RESULTS"
    cat "$RESULTS"
    say "written to ${RESULTS#"$ROOT"/} in $((SECONDS - started)) s"
    return
  fi

  start_arms
  preflight
  say "warming arm E: $E_KEYS keys into its hot tier: $(warm_keys E "$E_KEYS")"
  closed_phase
  rate=$(open_loop_rate)
  say "open loop at $rate req/s ($RATE)"
  open_phase "$rate"
  say "connection reuse"
  connection_reuse
  memory
  {
    report "$rate"
    echo
    echo "Whole run (tool and build checks included, profile excluded): $((SECONDS - started)) s."
  } >"$RESULTS"
  if [[ $PROFILE == 1 ]]; then
    { echo; profile_c; } >>"$RESULTS"
  fi
  cat "$RESULTS"
  say "written to ${RESULTS#"$ROOT"/} in $((SECONDS - started)) s"
}

main "$@"
