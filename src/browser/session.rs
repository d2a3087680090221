//! Browser sign-in, the cookies: what the session and login cookies hold, their names and attributes
//! (`HttpOnly`, `SameSite=Lax`, `Secure` and a host-only `__Host-` name when the gate is reached over TLS), and
//! the absolute and idle expiry of a session (the idle clock is a `seen` time, refreshed by re-issuing the cookie).

use http::{header, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use super::seal::{CookieKeys, OpenError, Purpose};
use crate::auth::{Principal, Via};

/// The name of the gate's cookies without the `__Host-` prefix.
pub const SESSION_COOKIE: &str = "mlflow-gate-session";
/// The login (pre-authentication) cookie.
pub const LOGIN_COOKIE: &str = "mlflow-gate-login";
/// Claims of the ID token kept in the session (besides the groups claim): the rest is dropped to keep the cookie
/// small and free of token material.
pub const KEPT_CLAIMS: &[&str] = &["sub", "iss", "aud", "email", "email_verified", "name", "preferred_username"];

/// What the session cookie holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionData {
    /// The principal's identity (after the issuer's subject rule).
    pub sub: String,
    /// The issuer.
    pub iss: String,
    /// Groups at sign-in.
    pub groups: Vec<String>,
    /// The kept claims of the ID token.
    pub claims: serde_json::Value,
    /// When the person signed in (Unix seconds): the absolute expiry counts from here.
    pub signed_in: u64,
    /// When the cookie was last issued (Unix seconds): the idle expiry counts from here.
    pub seen: u64,
}

impl SessionData {
    /// The principal of a session: the same as the person's bearer token, with `via = session`.
    pub fn principal(&self) -> Principal {
        Principal {
            sub: self.sub.clone(),
            issuer: self.iss.clone(),
            groups: self.groups.clone(),
            claims: self.claims.clone(),
            via: Via::Session,
        }
    }
}

/// What the login cookie holds between the redirect to the IdP and the callback.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoginData {
    /// The `state` sent to the IdP.
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier.
    pub verifier: String,
    /// Where to go after sign-in (already validated).
    pub return_to: String,
    /// When the login started (Unix seconds).
    pub created: u64,
}

/// Why a session cookie is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Cannot be opened (tampered, unknown or retired key).
    #[error("the session cookie is not valid ({0}); sign in again")]
    Invalid(OpenError),
    /// Opened but not readable.
    #[error("the session cookie is not valid; sign in again")]
    Unreadable,
    /// Several session cookies.
    #[error("several session cookies were sent; sign in again")]
    Ambiguous,
    /// Past the absolute lifetime.
    #[error("the session has reached its maximum lifetime; sign in again")]
    Expired,
    /// Idle for too long.
    #[error("the session expired after a period of inactivity; sign in again")]
    Idle,
}

/// Cookie naming and attributes, and the session's lifetimes.
#[derive(Debug, Clone)]
pub struct Jar {
    /// `Secure` and `__Host-` names.
    pub secure: bool,
    /// Absolute lifetime, seconds.
    pub absolute: u64,
    /// Idle lifetime, seconds.
    pub idle: u64,
    /// Login cookie lifetime, seconds.
    pub login: u64,
}

impl Jar {
    /// The cookie's name on the wire.
    pub fn name(&self, base: &str) -> String {
        if self.secure {
            format!("__Host-{base}")
        } else {
            base.to_string()
        }
    }

    /// A `Set-Cookie` value.
    pub fn set(&self, base: &str, value: &str, max_age: u64) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        let text = format!("{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}", self.name(base));
        HeaderValue::from_str(&text).ok()
    }

    /// A `Set-Cookie` value that deletes the cookie.
    pub fn clear(&self, base: &str) -> Option<HeaderValue> {
        self.set(base, "", 0)
    }

    /// The single value of a cookie in the request; `Err` when it is sent more than once with different values.
    pub fn get<'a>(&self, headers: &'a HeaderMap, base: &str) -> Result<Option<&'a str>, SessionError> {
        let name = self.name(base);
        let mut found: Option<&str> = None;
        let pairs = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';'));
        for (k, v) in pairs.filter_map(|c| c.trim().split_once('=')) {
            if k == name {
                match found {
                    Some(f) if f != v => return Err(SessionError::Ambiguous),
                    _ => found = Some(v),
                }
            }
        }
        Ok(found)
    }

    /// Seals a new session and returns its `Set-Cookie`.
    pub fn issue(&self, keys: &CookieKeys, data: &SessionData) -> Option<HeaderValue> {
        let sealed = keys.seal(Purpose::Session, &serde_json::to_vec(data).ok()?)?;
        let remaining = (data.signed_in + self.absolute).saturating_sub(data.seen);
        self.set(SESSION_COOKIE, &sealed, remaining)
    }

    /// Opens and checks a session cookie at `now`. Returns the session and, when it is due (a quarter of the idle
    /// time passed, or a retired key sealed it), the `Set-Cookie` of the refreshed cookie.
    pub fn open(
        &self,
        keys: &CookieKeys,
        sealed: &str,
        now: u64,
    ) -> Result<(SessionData, Option<HeaderValue>), SessionError> {
        let (plain, current_key) = keys.open(Purpose::Session, sealed, now).map_err(SessionError::Invalid)?;
        let mut data: SessionData = serde_json::from_slice(&plain).map_err(|_| SessionError::Unreadable)?;
        if now >= data.signed_in.saturating_add(self.absolute) {
            return Err(SessionError::Expired);
        }
        if now >= data.seen.saturating_add(self.idle) {
            return Err(SessionError::Idle);
        }
        let refresh = if !current_key || now.saturating_sub(data.seen) >= (self.idle / 4).max(1) {
            data.seen = now;
            self.issue(keys, &data)
        } else {
            None
        };
        Ok((data, refresh))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn jar(secure: bool) -> Jar {
        Jar { secure, absolute: 3600, idle: 600, login: 300 }
    }

    fn data(signed_in: u64, seen: u64) -> SessionData {
        SessionData {
            sub: "alice".into(),
            iss: "https://idp.example".into(),
            groups: vec!["engineers".into()],
            claims: serde_json::json!({"sub": "Alice"}),
            signed_in,
            seen,
        }
    }

    fn sealed(keys: &CookieKeys, d: &SessionData) -> String {
        keys.seal(Purpose::Session, &serde_json::to_vec(d).unwrap()).unwrap()
    }

    #[test]
    fn secure_cookies_are_host_only_httponly_lax() {
        let v = jar(true).set(SESSION_COOKIE, "x", 60).unwrap();
        assert_eq!(v, "__Host-mlflow-gate-session=x; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure");
        let v = jar(false).set(SESSION_COOKIE, "x", 60).unwrap();
        assert_eq!(v, "mlflow-gate-session=x; Path=/; Max-Age=60; HttpOnly; SameSite=Lax");
    }

    #[test]
    fn session_expires_absolutely_and_when_idle_and_refreshes_when_due() {
        let keys = CookieKeys::new(&[7; 32], &[]).unwrap();
        let j = jar(false);
        let fresh = sealed(&keys, &data(NOW - 10, NOW - 10));
        let (d, refresh) = j.open(&keys, &fresh, NOW).unwrap();
        assert_eq!((d.principal().via, refresh), (Via::Session, None));
        let due = sealed(&keys, &data(NOW - 200, NOW - 200));
        let (_, refresh) = j.open(&keys, &due, NOW).unwrap();
        assert!(refresh.is_some_and(|v| v.to_str().unwrap().contains("Max-Age=3400")));
        assert_eq!(j.open(&keys, &sealed(&keys, &data(NOW - 600, NOW - 600)), NOW).err(), Some(SessionError::Idle));
        assert_eq!(j.open(&keys, &sealed(&keys, &data(NOW - 3600, NOW - 5)), NOW).err(), Some(SessionError::Expired));
    }

    #[test]
    fn a_cookie_sent_twice_with_different_values_is_ambiguous() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; mlflow-gate-session=x"));
        assert_eq!(jar(false).get(&h, SESSION_COOKIE), Ok(Some("x")));
        assert_eq!(jar(true).get(&h, SESSION_COOKIE), Ok(None));
        h.append(header::COOKIE, HeaderValue::from_static("mlflow-gate-session=y"));
        assert_eq!(jar(false).get(&h, SESSION_COOKIE), Err(SessionError::Ambiguous));
    }
}
