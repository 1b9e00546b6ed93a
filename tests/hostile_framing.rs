//! Request smuggling and framing attacks, written byte for byte over TCP.
//!
//! Every case is sent on one connection followed by a pipelined, well-formed
//! `GET /v1/article/last` (with `Connection: close`), so a case that leaves bytes behind or
//! keeps a poisoned connection open shows up as an extra request. For each case the test
//! checks the responses the client gets, that the connection is then closed, and exactly
//! which complete requests reached the upstream: never two where one was sent, never a body
//! of another length, never the request hidden inside a body.

mod common;

use common::raw::{self, Conn};
use common::{RunningKb, TestGateway};

/// The pipelined request that follows every case.
const LAST: &str = "GET /v1/article/last HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n";

/// A request hidden in a body, for framings that might let it out.
const HIDDEN: &str = "GET /v1/article/smuggled HTTP/1.1\r\nHost: kb.example\r\n\r\n";

/// What a case must lead to.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// hyper's parser refuses the head: a bare 400, the connection closed, nothing upstream.
    ParserRefuses,
    /// The gateway refuses it with this status and code (the one JSON body), closes, and
    /// nothing reaches the upstream.
    GatewayRefuses(u16, &'static str),
    /// Exactly this one request (method, path, body length) reached the upstream, complete,
    /// and was answered 200. `keeps_alive`: the pipelined request is then served too.
    Forwarded(&'static str, &'static str, u64, KeepAlive),
    /// The head was forwarded, then the chunked body proved malformed: the upstream request
    /// was aborted (never seen complete), the client gets 400 bad_request or a closed
    /// connection, and the pipelined request is never read.
    BodyAborted,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum KeepAlive {
    Yes,
    /// The gateway serves the request, then closes (hyper does after Content-Length with
    /// Transfer-Encoding, since the sender's framing is suspect).
    ClosesAfter,
}

use Expect::{BodyAborted, Forwarded, GatewayRefuses, ParserRefuses};
use KeepAlive::{ClosesAfter, Yes};

const BAD_REQUEST: Expect = GatewayRefuses(400, "bad_request");

/// `POST /v1/article` with these extra header lines and this body.
fn post(headers: &str, body: &str) -> String {
    format!(
        "POST /v1/article HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {{key}}\r\n{headers}\r\n{body}"
    )
}

fn cases() -> Vec<(&'static str, String, Expect)> {
    let chunked_hello = "5\r\nhello\r\n0\r\n\r\n";
    vec![
        // -- Content-Length and Transfer-Encoding together: chunked wins, the connection closes.
        (
            "content_length_then_transfer_encoding",
            post(
                "Content-Length: 60\r\nTransfer-Encoding: chunked\r\n",
                &format!("{chunked_hello}{HIDDEN}"),
            ),
            Forwarded("POST", "/v1/article", 5, ClosesAfter),
        ),
        (
            "transfer_encoding_then_content_length",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                &format!("{chunked_hello}{HIDDEN}"),
            ),
            Forwarded("POST", "/v1/article", 5, ClosesAfter),
        ),
        // -- Content-Length values.
        (
            "two_different_content_lengths",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            ParserRefuses,
        ),
        (
            "content_length_list_5_5",
            post("Content-Length: 5, 5\r\n", "hello"),
            ParserRefuses,
        ),
        (
            "content_length_plus_5",
            post("Content-Length: +5\r\n", "hello"),
            ParserRefuses,
        ),
        (
            "content_length_hex_0x10",
            post("Content-Length: 0x10\r\n", "0123456789abcdef"),
            ParserRefuses,
        ),
        (
            "content_length_minus_1",
            post("Content-Length: -1\r\n", ""),
            ParserRefuses,
        ),
        (
            "content_length_empty",
            post("Content-Length: \r\n", ""),
            ParserRefuses,
        ),
        (
            "content_length_with_space_inside",
            post("Content-Length: 1 0\r\n", "0123456789"),
            ParserRefuses,
        ),
        (
            "content_length_overflowing_u64",
            post("Content-Length: 18446744073709551616\r\n", ""),
            ParserRefuses,
        ),
        (
            "same_content_length_twice_is_one_length",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            Forwarded("POST", "/v1/article", 5, Yes),
        ),
        // -- Transfer-Encoding values.
        (
            "transfer_encoding_not_ending_in_chunked",
            post("Transfer-Encoding: chunked, gzip\r\n", chunked_hello),
            ParserRefuses,
        ),
        (
            "transfer_encoding_gzip_only",
            post("Transfer-Encoding: gzip\r\n", "hello"),
            ParserRefuses,
        ),
        (
            "transfer_encoding_leading_comma",
            post("Transfer-Encoding: ,chunked\r\n", chunked_hello),
            BAD_REQUEST,
        ),
        (
            "transfer_encoding_gzip_then_chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", chunked_hello),
            BAD_REQUEST,
        ),
        (
            "transfer_encoding_chunked_twice_in_one_line",
            post("Transfer-Encoding: chunked, chunked\r\n", chunked_hello),
            BAD_REQUEST,
        ),
        (
            "two_transfer_encoding_lines",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                chunked_hello,
            ),
            BAD_REQUEST,
        ),
        (
            "two_transfer_encoding_lines_gzip_last",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
                chunked_hello,
            ),
            ParserRefuses,
        ),
        (
            "transfer_encoding_with_space_before_colon",
            post("Transfer-Encoding : chunked\r\n", chunked_hello),
            ParserRefuses,
        ),
        (
            "transfer_encoding_on_http_1_0",
            post("Transfer-Encoding: chunked\r\n", chunked_hello).replacen(
                "HTTP/1.1",
                "HTTP/1.0",
                1,
            ),
            ParserRefuses,
        ),
        (
            "transfer_encoding_in_upper_case_is_chunked",
            post("Transfer-Encoding: CHUNKED\r\n", chunked_hello),
            Forwarded("POST", "/v1/article", 5, Yes),
        ),
        // -- Chunk framing: the head is already forwarded when the body turns out bad.
        (
            "chunk_size_not_hex",
            post("Transfer-Encoding: chunked\r\n", "zz\r\nhello\r\n0\r\n\r\n"),
            BodyAborted,
        ),
        (
            "chunk_size_negative",
            post("Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n"),
            BodyAborted,
        ),
        (
            "chunk_size_overflowing_u64",
            post(
                "Transfer-Encoding: chunked\r\n",
                "1ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            ),
            BodyAborted,
        ),
        (
            "bare_lf_ending_a_chunk_size_line",
            post("Transfer-Encoding: chunked\r\n", "5\nhello\r\n0\r\n\r\n"),
            BodyAborted,
        ),
        (
            "bare_lf_ending_chunk_data",
            post("Transfer-Encoding: chunked\r\n", "5\r\nhello\n0\r\n\r\n"),
            BodyAborted,
        ),
        (
            "chunk_longer_than_its_size",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("5\r\nhello{HIDDEN}\r\n0\r\n\r\n"),
            ),
            BodyAborted,
        ),
        (
            "bare_lf_in_a_chunk_extension",
            post("Transfer-Encoding: chunked\r\n", "5;x\nhello\r\n0\r\n\r\n"),
            BodyAborted,
        ),
        // -- Header syntax.
        (
            "obs_fold_continuation_line",
            post("X-Custom: a\r\n folded\r\nContent-Length: 0\r\n", ""),
            ParserRefuses,
        ),
        (
            "nul_in_a_header_value",
            post("X-Custom: a\0b\r\nContent-Length: 0\r\n", ""),
            ParserRefuses,
        ),
        (
            "bare_cr_in_a_header_value",
            post("X-Custom: a\rb\r\nContent-Length: 0\r\n", ""),
            ParserRefuses,
        ),
        (
            "space_inside_a_header_name",
            post("X Custom: a\r\nContent-Length: 0\r\n", ""),
            ParserRefuses,
        ),
        (
            "non_token_header_name",
            post("X-Cust(om): a\r\nContent-Length: 0\r\n", ""),
            ParserRefuses,
        ),
        (
            "empty_header_name",
            post(": a\r\nContent-Length: 0\r\n", ""),
            ParserRefuses,
        ),
        (
            "lower_case_protocol_version",
            "GET /v1/article/a1 http/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n\r\n"
                .into(),
            ParserRefuses,
        ),
        (
            "http_0_9_request_line",
            "GET /v1/article/a1\r\n\r\n".into(),
            ParserRefuses,
        ),
        // -- Host.
        (
            "missing_host_on_http_1_1",
            "GET /v1/article/a1 HTTP/1.1\r\nAuthorization: Bearer {key}\r\n\r\n".into(),
            BAD_REQUEST,
        ),
        (
            "missing_host_on_http_1_0_is_allowed",
            "GET /v1/article/a1 HTTP/1.0\r\nAuthorization: Bearer {key}\r\nConnection: keep-alive\r\n\r\n"
                .into(),
            Forwarded("GET", "/v1/article/a1", 0, Yes),
        ),
        (
            "duplicate_host",
            "GET /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nHost: evil.example\r\nAuthorization: Bearer {key}\r\n\r\n"
                .into(),
            BAD_REQUEST,
        ),
        (
            "duplicate_host_with_one_value",
            "GET /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n\r\n"
                .into(),
            BAD_REQUEST,
        ),
        (
            "host_with_userinfo",
            "GET /v1/article/a1 HTTP/1.1\r\nHost: user@kb.example\r\nAuthorization: Bearer {key}\r\n\r\n"
                .into(),
            BAD_REQUEST,
        ),
        (
            "host_with_a_path",
            "GET /v1/article/a1 HTTP/1.1\r\nHost: kb.example/v1/account\r\nAuthorization: Bearer {key}\r\n\r\n"
                .into(),
            BAD_REQUEST,
        ),
        (
            "absolute_form_authority_differs_from_host",
            "GET http://evil.example/v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n\r\n"
                .into(),
            BAD_REQUEST,
        ),
        (
            "absolute_form_without_host",
            "GET http://kb.example/v1/article/a1 HTTP/1.1\r\nAuthorization: Bearer {key}\r\n\r\n"
                .into(),
            BAD_REQUEST,
        ),
        (
            "absolute_form_agreeing_with_host",
            "GET http://KB.example/v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n\r\n"
                .into(),
            Forwarded("GET", "/v1/article/a1", 0, Yes),
        ),
        // -- The target.
        (
            "fragment_in_the_target_is_never_forwarded",
            "GET /v1/article/a1#/../../account HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n\r\n"
                .into(),
            Forwarded("GET", "/v1/article/a1", 0, Yes),
        ),
        // -- Content-Length bodies that carry a request: it stays a body.
        (
            "request_hidden_in_a_content_length_body",
            post(&format!("Content-Length: {}\r\n", HIDDEN.len()), HIDDEN),
            Forwarded("POST", "/v1/article", HIDDEN.len() as u64, Yes),
        ),
    ]
}

#[tokio::test]
async fn framing_attacks_never_reach_the_upstream_as_anything_but_one_well_framed_request() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let cases = cases();
    assert!(cases.len() >= 40, "the table lost cases");
    let mut failures = Vec::new();
    let expected_complete: usize = cases
        .iter()
        .map(|(_, _, expect)| match expect {
            Forwarded(.., Yes) => 2,
            Forwarded(.., ClosesAfter) => 1,
            _ => 0,
        })
        .sum();
    for (name, request, expect) in cases {
        let bytes = format!("{request}{LAST}").replace("{key}", &key);
        if let Err(failure) = run_case(&gateway, &upstream, &bytes, expect).await {
            failures.push(format!("{name}: {failure}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // An aborted upstream request is recorded on the upstream's own time: once a last
    // request has made the round trip, every upstream record is in, and none of the
    // aborted ones may have turned out complete.
    let (status, _, _) = raw::get(gateway.addr, "/v1/article/sentinel", &key).await;
    assert_eq!(status, 200);
    let complete = upstream
        .requests()
        .iter()
        .filter(|s| s.body_complete)
        .count();
    assert_eq!(complete, expected_complete + 1, "{:?}", upstream.requests());
    gateway.shutdown().await;
}

/// Sends one case and checks the responses, the close, and what reached the upstream.
async fn run_case(
    gateway: &TestGateway,
    upstream: &RunningKb,
    bytes: &str,
    expect: Expect,
) -> Result<(), String> {
    let before = upstream.requests().len();
    let mut conn = Conn::open(gateway.addr).await;
    // The gateway may answer and close before reading everything; that is allowed.
    let _ = conn.send(bytes.as_bytes()).await;
    let mut statuses = Vec::new();
    let mut bodies = Vec::new();
    while let Some(response) = conn.next_response(false).await {
        statuses.push(response.status());
        bodies.push((
            response.code(),
            response.header("content-type").map(str::to_owned),
        ));
    }
    let rest = conn.until_closed().await;
    if !rest.is_empty() {
        return Err(format!(
            "bytes after the last response: {:?}",
            String::from_utf8_lossy(&rest)
        ));
    }
    let seen: Vec<_> = upstream.requests().split_off(before);
    let complete: Vec<(String, String, u64)> = seen
        .iter()
        .filter(|s| s.body_complete)
        .map(|s| (s.method.clone(), s.path_and_query.clone(), s.body_len))
        .collect();
    if seen.iter().any(|s| s.path_and_query.contains("smuggled")) {
        return Err(format!("a hidden request reached the upstream: {seen:?}"));
    }
    let last = || ("GET".to_string(), "/v1/article/last".to_string(), 0);
    match expect {
        ParserRefuses => {
            check(statuses == [400], "statuses", &statuses)?;
            check(seen.is_empty(), "upstream", &seen)?;
        }
        GatewayRefuses(status, code) => {
            check(statuses == [status], "statuses", &statuses)?;
            let json = (code.to_string(), Some("application/json".to_string()));
            check(bodies[0] == json, "body", &bodies)?;
            check(seen.is_empty(), "upstream", &seen)?;
        }
        Forwarded(method, path, body_len, keep_alive) => {
            let mut want = vec![(method.to_string(), path.to_string(), body_len)];
            let mut want_statuses = vec![200];
            if keep_alive == Yes {
                want.push(last());
                want_statuses.push(200);
            }
            check(statuses == want_statuses, "statuses", &statuses)?;
            check(
                complete == want && seen.len() == want.len(),
                "upstream",
                &seen,
            )?;
        }
        BodyAborted => {
            let refused =
                statuses.is_empty() || (statuses == [400] && bodies[0].0 == "bad_request");
            check(refused, "statuses", &(statuses, bodies))?;
            // The upstream saw the head and a broken body, or (when the body failed before
            // the head was flushed) nothing at all; never a complete request.
            check(complete.is_empty() && seen.len() <= 1, "upstream", &seen)?;
        }
    }
    Ok(())
}

fn check(ok: bool, what: &str, got: &impl std::fmt::Debug) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected {what}: {got:?}"))
    }
}

/// The control for the table above: two well-formed pipelined requests are both served, so
/// a refusal that closes the connection is the gateway's choice, not the harness's.
#[tokio::test]
async fn pipelined_well_formed_requests_are_both_served() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let mut conn = Conn::open(gateway.addr).await;
    let first =
        "GET /v1/article/first HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n\r\n";
    let bytes = format!("{first}{LAST}").replace("{key}", &key);
    conn.send(bytes.as_bytes()).await.unwrap();
    assert_eq!(conn.response().await.status(), 200);
    assert_eq!(conn.response().await.status(), 200);
    assert!(conn.until_closed().await.is_empty());
    let paths: Vec<String> = upstream
        .requests()
        .into_iter()
        .map(|s| s.path_and_query)
        .collect();
    assert_eq!(paths, ["/v1/article/first", "/v1/article/last"]);
    gateway.shutdown().await;
}

/// A framing error in the middle of a kept-alive connection: the requests before it were
/// served, it is refused, and nothing after it on that connection is read.
#[tokio::test]
async fn a_pipelined_request_after_a_framing_error_is_never_read() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let mut conn = Conn::open(gateway.addr).await;
    let good =
        "GET /v1/article/first HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n\r\n";
    let bad = post("Content-Length: 5\r\nContent-Length: 7\r\n", "hello");
    let after =
        "GET /v1/article/after HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n\r\n";
    let bytes = format!("{good}{bad}{after}{LAST}").replace("{key}", &key);
    let _ = conn.send(bytes.as_bytes()).await;
    assert_eq!(conn.response().await.status(), 200);
    assert_eq!(conn.response().await.status(), 400);
    assert!(
        conn.next_response(false).await.is_none(),
        "served after the error"
    );
    let paths: Vec<String> = upstream
        .requests()
        .into_iter()
        .map(|s| s.path_and_query)
        .collect();
    assert_eq!(paths, ["/v1/article/first"]);

    // The same with a gateway-level framing refusal (Transfer-Encoding it will not guess at).
    let mut conn = Conn::open(gateway.addr).await;
    let bad = post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n");
    let bytes = format!("{good}{bad}{after}{LAST}").replace("{key}", &key);
    let _ = conn.send(bytes.as_bytes()).await;
    assert_eq!(conn.response().await.status(), 200);
    let refused = conn.response().await;
    assert_eq!(
        (refused.status(), refused.code().as_str()),
        (400, "bad_request")
    );
    assert_eq!(refused.header("connection"), Some("close"));
    assert!(
        conn.next_response(false).await.is_none(),
        "served after the error"
    );
    assert_eq!(upstream.requests().len(), 2, "{:?}", upstream.requests());
    gateway.shutdown().await;
}

/// The refusals the parser gives before the gateway sees a request are hyper's own bare
/// responses; this pins their shape (status, no body, connection closed) so a change in hyper
/// is noticed.
#[tokio::test]
async fn parser_refusals_are_bare_and_close() {
    let (upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let bytes =
        "GET /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nContent-Length: +5\r\n\r\nhello";
    let (status, headers, body) = raw::request(gateway.addr, bytes.as_bytes()).await;
    assert_eq!(status, 400);
    assert_eq!(body, "");
    assert_eq!(raw::header(&headers, "content-length"), Some("0"));
    assert!(upstream.requests().is_empty());
    gateway.shutdown().await;
}

/// HTTP/2 carries the authority in `:authority`; a `Host` field beside it must agree.
#[tokio::test]
async fn http2_host_disagreeing_with_authority_is_refused() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let h2 = common::h2c_client();
    let send = |host: String| {
        h2.get(gateway.url("/v1/article/a1"))
            .bearer_auth(&key)
            .header("host", host)
            .send()
    };
    let agreeing = send(gateway.addr.to_string()).await.unwrap();
    assert_eq!(agreeing.version(), http::Version::HTTP_2);
    assert_eq!(agreeing.status(), 200);
    let disagreeing = send("evil.example".into()).await.unwrap();
    assert_eq!(
        common::status_and_code(disagreeing).await,
        (400, "bad_request".to_string())
    );
    assert_eq!(upstream.requests().len(), 1);
    gateway.shutdown().await;
}
