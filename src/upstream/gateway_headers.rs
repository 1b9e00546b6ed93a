//! The headers the gateway itself sets on every forwarded request (`Host`, the injected
//! credential, `X-Forwarded-*`, `X-Request-Id`, `X-Kbgate-Key-Id`), hashed into a map once at
//! start-up. Each request clones that map and fills in its values by position: inserting them
//! by name hashed and placed each one again, about 230 instructions a header (callgrind,
//! benches/load profile).

use super::ForwardInfo;
use crate::net::X_FORWARDED_FOR;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

// Header names the gateway sets on every forwarded request, built once: inserting by a string
// literal would copy a custom name into a new buffer on every request.
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_KBGATE_KEY_ID: HeaderName = HeaderName::from_static("x-kbgate-key-id");

/// The gateway's headers as one map, ready to clone; see the module documentation.
pub(super) struct GatewayHeaders {
    /// Every name the gateway sets, in its order, with the injected values and placeholders.
    template: HeaderMap,
    /// What fills each entry of `template`, in the same order.
    fills: Vec<Fill>,
    /// Injected names a client may otherwise send: a client's header of one of these names is
    /// not forwarded, so that the KB hears only the injected value.
    injected: Vec<HeaderName>,
}

/// Where the value of one of the gateway's headers comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// The same on every request: an injected header, or `Host` when it is the KB's own.
    Fixed,
    /// `Host` when the client's is preserved (the KB's when the client sent none).
    ClientHost,
    ForwardedFor,
    ForwardedProto,
    /// The client's `Host`; when there is none, the injected value or no header at all.
    ForwardedHost {
        injected: bool,
    },
    RequestId,
    /// The key's id; when it has none, the injected value or no header at all.
    KeyId {
        injected: bool,
    },
}

impl GatewayHeaders {
    /// The gateway's headers in the order they take effect: `Host`, then the injected ones
    /// (which may replace it), then the forwarding headers (which replace any injected header
    /// of their name).
    pub(super) fn new(
        kb_host: &HeaderValue,
        preserve_host: bool,
        inject: &[(HeaderName, HeaderValue)],
    ) -> GatewayHeaders {
        let placeholder = || HeaderValue::from_static("");
        let mut template = HeaderMap::with_capacity(32);
        template.insert(header::HOST, kb_host.clone());
        for (name, value) in inject {
            template.insert(name.clone(), value.clone());
        }
        let injected = |name: &HeaderName| inject.iter().any(|(injected, _)| injected == name);
        for name in [
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            X_REQUEST_ID,
            X_KBGATE_KEY_ID,
        ] {
            // An injected value stays as the one sent when the request has none of its own.
            template.entry(name).or_insert_with(placeholder);
        }
        let fills = template
            .keys()
            .map(|name| match name {
                name if name == X_FORWARDED_FOR => Fill::ForwardedFor,
                name if name == X_FORWARDED_PROTO => Fill::ForwardedProto,
                name if name == X_FORWARDED_HOST => Fill::ForwardedHost {
                    injected: injected(name),
                },
                name if name == X_REQUEST_ID => Fill::RequestId,
                name if name == X_KBGATE_KEY_ID => Fill::KeyId {
                    injected: injected(name),
                },
                name if name == header::HOST && preserve_host && !injected(name) => {
                    Fill::ClientHost
                }
                _ => Fill::Fixed,
            })
            .collect();
        let injected = inject
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| !super::hygiene::is_client_only(name))
            .collect();
        GatewayHeaders {
            template,
            fills,
            injected,
        }
    }

    /// A new map holding the gateway's headers for this request.
    pub(super) fn for_request(&self, info: &ForwardInfo<'_>) -> HeaderMap {
        let mut headers = self.template.clone();
        // A header of the gateway's with no value for this request, and none injected.
        let (mut no_forwarded_host, mut no_key_id) = (false, false);
        for (fill, value) in self.fills.iter().zip(headers.values_mut()) {
            let filled = match *fill {
                Fill::Fixed => continue,
                Fill::ClientHost => match &info.host {
                    Some(host) => host,
                    None => continue,
                },
                Fill::ForwardedHost { injected } => match &info.host {
                    Some(host) => host,
                    None => {
                        no_forwarded_host = !injected;
                        continue;
                    }
                },
                Fill::ForwardedFor => info.client_ip,
                Fill::ForwardedProto => {
                    *value = HeaderValue::from_static(info.proto);
                    continue;
                }
                Fill::RequestId => info.request_id,
                Fill::KeyId { injected } => match info.key_id {
                    Some(id) => id,
                    None => {
                        no_key_id = !injected;
                        continue;
                    }
                },
            };
            *value = filled.clone();
        }
        if no_forwarded_host {
            headers.remove(X_FORWARDED_HOST);
        }
        if no_key_id {
            headers.remove(X_KBGATE_KEY_ID);
        }
        headers
    }

    /// Whether a client's header of this name gives way to the gateway's own.
    pub(super) fn replaces(&self, name: &HeaderName) -> bool {
        self.injected.contains(name)
    }

    /// Whether the gateway sets a header of this name.
    pub(super) fn sets(&self, name: &HeaderName) -> bool {
        self.template.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Upstream, UpstreamConfig, hygiene, join_cookies};
    use super::*;
    use crate::body;
    use http::Request;
    use std::time::{Duration, Instant};

    /// The upstream request's headers as they were built before the template: the client's
    /// that pass, then `Host`, the injected ones and the forwarding headers inserted by name.
    /// An independent oracle for what the KB must hear.
    fn by_name(config: &UpstreamConfig, client: &HeaderMap, info: &ForwardInfo<'_>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in client {
            let underscored = name.as_str().contains('_');
            if !hygiene::is_client_only(name)
                && (!underscored
                    || config.forward_underscore_headers && !hygiene::folds_to_client_only(name))
            {
                headers.append(name.clone(), value.clone());
            }
        }
        for name in hygiene::connection_listed(client) {
            headers.remove(name);
        }
        if headers.get_all(header::COOKIE).iter().count() > 1 {
            join_cookies(&mut headers);
        }
        let kb = HeaderValue::from_static("kb.example:8080");
        let host = match &info.host {
            Some(client) if config.preserve_host => client.clone(),
            _ => kb,
        };
        headers.insert(header::HOST, host);
        for (name, value) in &config.inject_headers {
            headers.insert(name.clone(), value.clone());
        }
        headers.insert(X_FORWARDED_FOR, info.client_ip.clone());
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(info.proto));
        if let Some(host) = &info.host {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
        headers.insert(X_REQUEST_ID, info.request_id.clone());
        if let Some(id) = info.key_id {
            headers.insert(X_KBGATE_KEY_ID, id.clone());
        }
        headers
    }

    /// Every name with its values in order: what the KB reads, whatever the order of names.
    fn by_names(headers: &HeaderMap) -> Vec<(String, Vec<HeaderValue>)> {
        let mut names: Vec<_> = headers
            .keys()
            .map(|name| {
                let values = headers.get_all(name).iter().cloned().collect();
                (name.to_string(), values)
            })
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        names
    }

    fn config(preserve_host: bool, underscores: bool, inject: &[(&str, &str)]) -> UpstreamConfig {
        UpstreamConfig {
            origin: "http://kb.example:8080/".parse().unwrap(),
            base_path: String::new(),
            inject_headers: inject
                .iter()
                .map(|(name, value)| (name.parse().unwrap(), HeaderValue::from_str(value).unwrap()))
                .collect(),
            inject_query: String::new(),
            inject_query_names: Vec::new(),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(5),
            ca: None,
            http2: false,
            forward_underscore_headers: underscores,
            preserve_host,
            public_origin: None,
        }
    }

    #[test]
    fn the_kb_hears_what_inserting_each_header_by_name_would_send() {
        let injects: [&[(&str, &str)]; 5] = [
            &[],
            &[("authorization", "Bearer kb")],
            &[("x-kb-token", "kb"), ("cookie", "kb=1")],
            &[
                ("host", "injected.example"),
                ("x-forwarded-for", "injected"),
            ],
            &[
                ("x-request-id", "injected"),
                ("accept", "kb/json"),
                ("x-kbgate-key-id", "i"),
            ],
        ];
        let clients: [&[(&str, &str)]; 5] = [
            &[
                ("host", "gw.example"),
                ("user-agent", "curl"),
                ("authorization", "Bearer k"),
            ],
            &[
                ("accept", "*/*"),
                ("x-kb-token", "forged"),
                ("cookie", "a=1"),
                ("cookie", "b=2"),
            ],
            &[
                ("connection", "x-forwarded-for, x-drop, cookie, x-kb-token"),
                ("x-drop", "1"),
                ("x-keep", "2"),
                ("cookie", "c=3"),
                ("x-forwarded-host", "forged"),
            ],
            &[
                ("x_api_key", "k"),
                ("x_custom", "1"),
                ("accept", "a"),
                ("accept", "b"),
            ],
            &[
                ("host", "h"),
                ("x-request-id", "forged"),
                ("te", "trailers"),
                ("expect", "x"),
            ],
        ];
        let client_ip = HeaderValue::from_static("192.0.2.1");
        let request_id = HeaderValue::from_static("req-1");
        let key_id = HeaderValue::from_static("key_1");
        let mut compared = 0;
        for inject in injects {
            for (preserve_host, underscores) in [(false, false), (true, true)] {
                let config = config(preserve_host, underscores, inject);
                let upstream = Upstream::new(config.clone()).unwrap();
                for client_headers in clients {
                    let mut client = Request::get("/v1/a").body(()).unwrap();
                    for (name, value) in client_headers {
                        client
                            .headers_mut()
                            .append(*name, HeaderValue::from_static(value));
                    }
                    for (host, key_id) in [
                        (Some(HeaderValue::from_static("gw.example")), Some(&key_id)),
                        (None, None),
                    ] {
                        let info = ForwardInfo {
                            path: "/v1/a",
                            query: None,
                            client_ip: &client_ip,
                            proto: "https",
                            host,
                            request_id: &request_id,
                            key_id,
                            started: Instant::now(),
                        };
                        let sent = upstream
                            .upstream_request(&client, body::empty(), &info)
                            .unwrap();
                        let expected = by_name(&config, client.headers(), &info);
                        assert_eq!(
                            by_names(sent.headers()),
                            by_names(&expected),
                            "inject {inject:?}, client {client_headers:?}, host {:?}",
                            info.host
                        );
                        compared += 1;
                    }
                }
            }
        }
        assert_eq!(compared, 5 * 2 * 5 * 2);
    }
}
