//! Forwarding, header side: what crosses the gate. Hop-by-hop headers are dropped in both directions (RFC 9110
//! section 7.6.1: `Connection` and every header it names, plus the classic list); client-sent identity and
//! forwarding headers are replaced by the gate's own, because MLflow trusts some of them (the Assistant treats a
//! loopback peer without `X-Forwarded-*` as local; the auth app honours `X-MLflow-Assistant-Delegation`).

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that are never forwarded, in either direction.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Client request headers replaced or dropped: credentials (the gate is the authority; MLflow must never see the
/// caller's token), headers MLflow or its auth app treat as identity, and forwarding headers the gate sets itself.
const CLIENT_ONLY: [&str; 11] = [
    "authorization",
    "x-mlflow-assistant-delegation",
    "x-mlflow-authorization",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
    "via",
    "expect",
];

/// Cookies the MLflow UI turns into request headers (`mlflow-request-header-Authorization=Bearer ...`): they carry
/// the token, so they are not passed on.
const UI_HEADER_COOKIE_PREFIX: &str = "mlflow-request-header-";
/// The gate's own cookies (browser session and login, with or without the `__Host-` prefix): identity the gate
/// evaluated, never MLflow's to see.
const GATE_COOKIE_PREFIXES: [&str; 2] = ["mlflow-gate-", "__host-mlflow-gate-"];

/// The client connection, as the server accepted it: the forwarding headers, and the identity of a verified
/// client certificate for authentication.
#[derive(Debug, Clone)]
pub struct ClientConn {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The identity of a verified client certificate (mTLS), if one was presented.
    pub client_cert: Option<String>,
}

/// The headers a `Connection` header names (hop-by-hop too).
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One look at the (few) names present, and removals only of those found: this runs for every response, and
    // removing each of the nine names parsed and hashed each of them. `connection` is one of them, so a map without
    // any names none by its `Connection` header either.
    let present: Vec<HeaderName> = headers.keys().filter(|n| HOP_BY_HOP.contains(&n.as_str())).cloned().collect();
    if present.is_empty() {
        return;
    }
    for name in connection_named(headers) {
        headers.remove(name);
    }
    for name in present {
        headers.remove(name);
    }
}

/// The headers sent upstream for a client request. `original_host` is the client's `Host` (or HTTP/2
/// `:authority`); `upstream_host` replaces it so that MLflow's host check accepts the request.
pub fn for_upstream(
    client: &HeaderMap,
    conn: &ClientConn,
    original_host: Option<&str>,
    upstream_host: &HeaderValue,
) -> HeaderMap {
    // One pass over the client's headers, keeping what may cross (cheaper than cloning the map and removing twenty
    // names from it: this runs for every request).
    let named = connection_named(client);
    let mut h = HeaderMap::with_capacity(client.len() + 5);
    for (name, value) in client {
        let s = name.as_str();
        if name == header::COOKIE || HOP_BY_HOP.contains(&s) || CLIENT_ONLY.contains(&s) || named.contains(name) {
            continue;
        }
        h.append(name.clone(), value.clone());
    }
    if client.contains_key(header::COOKIE) && !named.contains(&header::COOKIE) {
        forward_cookies(client, &mut h);
    }
    h.insert(header::HOST, upstream_host.clone());
    let ip = HeaderValue::from_str(&conn.peer.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown"));
    h.insert("x-forwarded-for", ip);
    h.insert("x-forwarded-proto", HeaderValue::from_static(if conn.tls { "https" } else { "http" }));
    if let Some(host) = original_host.and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert("x-forwarded-host", host);
    }
    h.insert(header::VIA, HeaderValue::from_static("1.1 mlflow-gate"));
    h
}

/// The client's cookies that may cross, as one `Cookie` header: all but the UI's header cookies and the gate's own.
fn forward_cookies(client: &HeaderMap, h: &mut HeaderMap) {
    let kept: Vec<String> = client
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| {
            let lower = c.to_ascii_lowercase();
            !c.is_empty()
                && !lower.starts_with(UI_HEADER_COOKIE_PREFIX)
                && !GATE_COOKIE_PREFIXES.iter().any(|p| lower.starts_with(p))
        })
        .map(str::to_owned)
        .collect();
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            h.insert(header::COOKIE, v);
        }
    }
}

/// Cleans an upstream response's headers before they go to the client.
pub fn for_client(upstream: &mut HeaderMap) {
    remove_hop_by_hop(upstream);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn conn() -> ClientConn {
        let ip = "10.1.2.3".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        ClientConn { peer: SocketAddr::new(ip, 40000), tls: false, client_cert: None }
    }

    #[test]
    fn credentials_identity_and_hop_by_hop_headers_are_not_forwarded() {
        let mut c = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer secret"),
            ("x-mlflow-assistant-delegation", "x"),
            ("x-mlflow-authorization", "Basic eA=="),
            ("x-forwarded-for", "127.0.0.1"),
            ("connection", "keep-alive, x-custom-hop"),
            ("x-custom-hop", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("cookie", "a=1; mlflow-request-header-Authorization=Bearer%20secret; __Host-mlflow-gate-session=s; b=2"),
            ("content-type", "application/json"),
        ] {
            c.append(k, HeaderValue::from_static(v));
        }
        let up = for_upstream(&c, &conn(), Some("gate.example"), &HeaderValue::from_static("127.0.0.1:5000"));
        for gone in [
            "authorization",
            "x-mlflow-assistant-delegation",
            "x-mlflow-authorization",
            "connection",
            "x-custom-hop",
            "te",
            "transfer-encoding",
        ] {
            assert!(!up.contains_key(gone), "{gone} forwarded");
        }
        assert_eq!(up["x-forwarded-for"], "10.1.2.3");
        assert_eq!(up["x-forwarded-proto"], "http");
        assert_eq!(up["x-forwarded-host"], "gate.example");
        assert_eq!(up["host"], "127.0.0.1:5000");
        assert_eq!(up["cookie"], "a=1; b=2");
        assert_eq!(up["content-type"], "application/json");
    }

    #[test]
    fn repeated_headers_cross_in_order_and_a_cookie_header_named_by_connection_does_not() {
        let mut c = HeaderMap::new();
        for (k, v) in [("accept", "a"), ("accept", "b"), ("connection", "cookie"), ("cookie", "a=1")] {
            c.append(k, HeaderValue::from_static(v));
        }
        let up = for_upstream(&c, &conn(), None, &HeaderValue::from_static("127.0.0.1:5000"));
        let accept: Vec<_> = up.get_all("accept").iter().collect();
        assert_eq!(accept, ["a", "b"]);
        assert!(!up.contains_key("cookie"));
        assert!(!up.contains_key("x-forwarded-host"));
    }

    #[test]
    fn a_response_loses_its_hop_by_hop_headers_and_those_its_connection_header_names() {
        let mut r = HeaderMap::new();
        for (k, v) in [
            ("content-type", "application/json"),
            ("connection", "keep-alive, x-upstream-hop"),
            ("x-upstream-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("keep-alive", "timeout=5"),
            ("x-request-id", "r"),
        ] {
            r.append(k, HeaderValue::from_static(v));
        }
        for_client(&mut r);
        let mut left: Vec<_> = r.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-request-id"]);
        // Nothing hop-by-hop: the map is left as it is.
        let mut plain = HeaderMap::new();
        plain.append("content-type", HeaderValue::from_static("application/json"));
        plain.append("x-upstream-hop", HeaderValue::from_static("1"));
        for_client(&mut plain);
        assert_eq!(plain.len(), 2);
    }
}
