//! Which webhook URLs may be called: http(s) only, and (server-side request forgery) no host
//! that resolves to a loopback, link-local, private or unspecified address unless
//! `webhooks.allow_private_networks` is set. Checked when a webhook is saved and again at each
//! delivery, which then connects to the very addresses checked (no second lookup to rebind).

use std::net::{IpAddr, SocketAddr};

/// Why a URL is refused (said to the admin who gave it).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TargetError {
    #[error("must be an absolute http:// or https:// URL")]
    NotHttp,
    #[error("its host could not be resolved")]
    Unresolved,
    #[error(
        "its host resolves to a private, loopback or link-local address ({0}); set webhooks.allow_private_networks to allow it"
    )]
    Private(IpAddr),
}

/// A checked URL: the host and the addresses it may be reached at.
#[derive(Debug)]
pub struct Target {
    pub url: reqwest::Url,
    pub host: String,
    pub addrs: Vec<SocketAddr>,
}

/// Parses and resolves `url`, refusing what may not be called.
pub async fn check(url: &str, allow_private: bool) -> Result<Target, TargetError> {
    let url = reqwest::Url::parse(url).map_err(|_| TargetError::NotHttp)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::NotHttp);
    }
    let host = url.host_str().ok_or(TargetError::NotHttp)?.to_string();
    let port = url.port_or_known_default().ok_or(TargetError::NotHttp)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|_| TargetError::Unresolved)?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(TargetError::Unresolved);
    }
    if !allow_private && let Some(a) = addrs.iter().find(|a| is_private(a.ip())) {
        return Err(TargetError::Private(a.ip()));
    }
    Ok(Target { url, host, addrs })
}

/// Loopback, private, link-local, shared (CGNAT), unspecified or broadcast.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn private_addresses_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:9/x",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest",
            "http://[::1]:80/",
            "http://[::ffff:192.168.0.1]/",
            "http://localhost:9/",
        ] {
            assert!(
                matches!(check(url, false).await, Err(TargetError::Private(_))),
                "{url}"
            );
            assert!(check(url, true).await.is_ok(), "{url}");
        }
        assert!(check("http://93.184.216.34/", false).await.is_ok());
        assert_eq!(
            check("ftp://example.com/", true).await.unwrap_err(),
            TargetError::NotHttp
        );
    }
}
