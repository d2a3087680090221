//! Browser sign-in, request checks: which requests are HTML navigations (redirected to sign in instead of 401),
//! which return paths are safe (same-origin relative only: no open redirect), and the CSRF rule for requests
//! authenticated by the session cookie (an `Origin`, or lacking one a `Referer`, of a configured public origin).

use http::{header, HeaderMap, Method};

/// Whether a request is a browser's page navigation: a GET that accepts HTML, outside the API prefixes.
pub fn is_html_navigation(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    if *method != Method::GET || path.starts_with("/api/") || path.starts_with("/ajax-api/") {
        return false;
    }
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("text/html")))
}

/// A return path the gate may redirect to after sign-in: a same-origin absolute path (`/...`), no scheme, no
/// authority (`//`), no backslash, no control characters or spaces. Anything else becomes `/`.
pub fn safe_return_path(candidate: &str) -> &str {
    let ok = candidate.starts_with('/')
        && !candidate.starts_with("//")
        && !candidate.contains('\\')
        && !candidate.chars().any(|c| c.is_control() || c.is_whitespace())
        && !candidate.starts_with("/gate/callback")
        && candidate.len() <= 2048;
    if ok {
        candidate
    } else {
        "/"
    }
}

/// Why a cookie-authenticated request is refused as a possible cross-site request forgery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    /// Neither `Origin` nor `Referer`.
    #[error(
        "a browser request that changes state must carry an Origin (or Referer) header of this gate; none was sent"
    )]
    NoOrigin,
    /// An origin that is not a configured public origin.
    #[error(
        "cross-site request refused: origin {0:?} is not one of this gate's public origins (browser.public_origins)"
    )]
    Foreign(String),
}

/// The CSRF rule: safe methods pass; others need `Origin` (or, without it, `Referer`'s origin) in `origins`.
pub fn check_csrf(method: &Method, headers: &HeaderMap, origins: &[String]) -> Result<(), CsrfError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let single = |name: header::HeaderName| {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => Some(v.to_str().unwrap_or("(unreadable)").to_string()),
            (Some(_), Some(_)) => Some("(several)".to_string()),
            _ => None,
        }
    };
    let origin = match single(header::ORIGIN) {
        Some(o) => o,
        None => match single(header::REFERER) {
            Some(r) => url::Url::parse(&r).map(|u| u.origin().ascii_serialization()).unwrap_or(r),
            None => return Err(CsrfError::NoOrigin),
        },
    };
    if origins.contains(&origin) {
        Ok(())
    } else {
        Err(CsrfError::Foreign(origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_html_gets_outside_the_api_are_navigations() {
        let html = headers(&[("accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")]);
        assert!(is_html_navigation(&Method::GET, "/", &html));
        assert!(is_html_navigation(&Method::GET, "/gate/reviews", &html));
        assert!(!is_html_navigation(&Method::GET, "/ajax-api/2.0/mlflow/experiments/search", &html));
        assert!(!is_html_navigation(&Method::GET, "/api/2.0/mlflow/experiments/search", &html));
        assert!(!is_html_navigation(&Method::POST, "/", &html));
        assert!(!is_html_navigation(&Method::GET, "/", &headers(&[("accept", "application/json, */*")])));
        assert!(!is_html_navigation(&Method::GET, "/", &HeaderMap::new()));
    }

    #[test]
    fn open_redirect_attempts_return_to_the_root() {
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "\\\\evil.example",
            "javascript:alert(1)",
            "evil.example",
            "/ok\r\nSet-Cookie: x=1",
            "/a b",
            "",
            "/gate/callback?code=x",
        ] {
            assert_eq!(safe_return_path(bad), "/", "{bad:?}");
        }
        assert_eq!(safe_return_path("/#/models/m1"), "/#/models/m1");
        assert_eq!(safe_return_path("/gate/reviews?x=1"), "/gate/reviews?x=1");
    }

    #[test]
    fn csrf_needs_a_public_origin_on_state_changes() {
        let origins = ["https://gate.example".to_string()];
        let check = |m: Method, h: &[(&'static str, &'static str)]| check_csrf(&m, &headers(h), &origins);
        assert_eq!(check(Method::GET, &[]), Ok(()));
        assert_eq!(check(Method::POST, &[("origin", "https://gate.example")]), Ok(()));
        assert_eq!(check(Method::DELETE, &[("referer", "https://gate.example/#/models")]), Ok(()));
        assert_eq!(check(Method::POST, &[]), Err(CsrfError::NoOrigin));
        assert!(matches!(check(Method::POST, &[("origin", "https://evil.example")]), Err(CsrfError::Foreign(_))));
        assert!(matches!(check(Method::POST, &[("origin", "null")]), Err(CsrfError::Foreign(_))));
        let spoof = [("origin", "https://evil.example"), ("referer", "https://gate.example/")];
        assert!(matches!(check(Method::PATCH, &spoof), Err(CsrfError::Foreign(_))));
        let two = [("origin", "https://gate.example"), ("origin", "https://evil.example")];
        assert!(matches!(check(Method::POST, &two), Err(CsrfError::Foreign(_))));
    }
}
