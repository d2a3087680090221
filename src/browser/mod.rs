//! Browser sign-in, in the authenticate phase: a request without a bearer token may carry the gate's session cookie
//! (sealed with AES-256-GCM, see `seal`), which becomes the same [`Principal`] as the person's bearer token with
//! `via = session`; a cookie-authenticated state change must come from a public origin (CSRF, `checks`); an HTML
//! navigation without credentials is sent to the IdP instead of getting 401. The gate's own pages under `/gate/`
//! (`login`, the callback, `logout`, `me`) are served here, before any MLflow route.

mod checks;
mod oidc;
pub mod seal;
pub mod session;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::auth::{AuthError, Authenticator, Principal};
use crate::body::{self, GateBody};
use crate::config::{BrowserConfig, SecretSource};
use crate::error::GateError;
use crate::mlflow::canon::Target;

pub use checks::{check_csrf, is_html_navigation, safe_return_path, CsrfError};
use seal::{CookieKeys, Purpose};
use session::{Jar, LoginData, SessionData, SessionError, LOGIN_COOKIE, SESSION_COOKIE};

/// The prefix of the gate's own pages.
pub const GATE_PREFIX: &str = "/gate/";

/// Why browser sign-in cannot start (a secret missing or unusable). Never contains the secret.
#[derive(Debug, thiserror::Error)]
#[error("browser: {0}")]
pub struct BrowserError(pub String);

/// What the session cookie of a request says.
pub enum Session {
    /// No session cookie.
    Absent,
    /// A valid session, and the refreshed cookie when one is due.
    Valid(Principal, Option<HeaderValue>),
    /// A session cookie the gate refuses (the reason is for the client).
    Refused(SessionError),
}

/// Browser sign-in: the config, the secrets read at start, and the IdP.
pub struct Browser {
    config: BrowserConfig,
    keys: CookieKeys,
    client_secret: Option<String>,
    jar: Jar,
    idp: oidc::Idp,
    /// `state` values of completed callbacks, kept for the login timeout: a replayed callback is refused.
    used_states: moka::sync::Cache<String, ()>,
}

impl Browser {
    /// Reads the secrets and prepares the IdP client. `tls`: the gate itself serves TLS.
    pub fn start(config: &BrowserConfig, tls: bool) -> Result<Browser, BrowserError> {
        let current = read_key(&config.cookie_key)?;
        let previous = config
            .previous_cookie_keys
            .iter()
            .map(|p| read_key(&p.key).map(|k| (k, p.accept_until)))
            .collect::<Result<Vec<_>, _>>()?;
        let keys = CookieKeys::new(&current, &previous).map_err(|e| BrowserError(format!("cookie key: {e}")))?;
        let client_secret = config.client_secret.as_ref().map(read_secret).transpose()?;
        let idp =
            oidc::Idp::new(&config.discovery_url, &config.issuer.issuer).map_err(|e| BrowserError(e.to_string()))?;
        let jar = Jar {
            secure: tls || config.behind_tls,
            absolute: config.session_absolute.as_secs(),
            idle: config.session_idle.as_secs(),
            login: config.login_timeout.as_secs(),
        };
        let used_states = moka::sync::Cache::builder().max_capacity(100_000).time_to_live(config.login_timeout).build();
        Ok(Browser { config: config.clone(), keys, client_secret, jar, idp, used_states })
    }

    /// The cookie keys (tests seal cookies with them).
    pub fn keys(&self) -> &CookieKeys {
        &self.keys
    }

    /// Whether the path is one of the gate's own pages.
    pub fn owns(path: &str) -> bool {
        path.starts_with(GATE_PREFIX)
    }

    /// The session of a request, when it sends no `Authorization` header (a bearer token always wins).
    pub fn session(&self, headers: &HeaderMap, now: u64) -> Session {
        if headers.contains_key(header::AUTHORIZATION) {
            return Session::Absent;
        }
        let sealed = match self.jar.get(headers, SESSION_COOKIE) {
            Ok(Some(s)) => s,
            Ok(None) => return Session::Absent,
            Err(e) => return Session::Refused(e),
        };
        match self.jar.open(&self.keys, sealed, now) {
            Ok((data, refresh)) => Session::Valid(data.principal(), refresh),
            Err(e) => Session::Refused(e),
        }
    }

    /// The CSRF rule for a request authenticated by the session cookie.
    pub fn csrf(&self, method: &Method, headers: &HeaderMap) -> Result<(), GateError> {
        check_csrf(method, headers, &self.config.public_origins).map_err(|e| GateError::PermissionDenied(e.to_string()))
    }

    /// Starts a sign-in: a login cookie holding `state`, `nonce`, the PKCE verifier and where to return, and a
    /// redirect to the IdP's authorization endpoint.
    pub async fn sign_in(&self, return_to: &str, now: u64) -> Result<Response<GateBody>, GateError> {
        let doc = self.idp.discovery().await.map_err(idp_unavailable)?;
        let login = LoginData {
            state: oidc::fresh_secret(),
            nonce: oidc::fresh_secret(),
            verifier: oidc::fresh_secret(),
            return_to: safe_return_path(return_to).to_string(),
            created: now,
        };
        let url =
            oidc::authorize_url(&doc, &self.client(), &self.config.scopes, &login.state, &login.nonce, &login.verifier)
                .map_err(idp_unavailable)?;
        let plain = serde_json::to_vec(&login).map_err(|_| GateError::Internal)?;
        let sealed = self.keys.seal(Purpose::Login, &plain).ok_or(GateError::Internal)?;
        let cookie = self.jar.set(LOGIN_COOKIE, &sealed, self.jar.login).ok_or(GateError::Internal)?;
        redirect(&url, vec![cookie])
    }

    /// Serves a page under `/gate/`.
    pub async fn serve(
        &self,
        method: &Method,
        target: &Target,
        headers: &HeaderMap,
        auth: &Authenticator,
        now: u64,
    ) -> Result<Response<GateBody>, GateError> {
        let query = target.query_pairs();
        let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let path = target.path.as_str();
        match (method, path) {
            (&Method::GET, "/gate/login") => self.sign_in(param("return_to").unwrap_or("/"), now).await,
            (&Method::GET, p) if p == self.config.callback_path() => self.callback(&query, headers, auth, now).await,
            (&Method::GET | &Method::POST, "/gate/logout") => self.sign_out(method, headers).await,
            (&Method::GET, "/gate/me") => self.me(headers, auth, now).await,
            _ => Err(GateError::NotFound(format!("{method} {path} is not a page of mlflow-gate"))),
        }
    }

    /// The callback: the login cookie must match `state`, be fresh and unused; the code is exchanged; the ID token
    /// verified (issuer rules, `aud` = client id, `nonce`); then the session cookie is issued.
    async fn callback(
        &self,
        query: &[(String, String)],
        headers: &HeaderMap,
        auth: &Authenticator,
        now: u64,
    ) -> Result<Response<GateBody>, GateError> {
        let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let refused =
            |why: &str| GateError::Unauthenticated(format!("sign-in failed: {why}; start again at /gate/login"));
        if let Some(error) = param("error") {
            let detail = param("error_description").map(|d| format!(": {d}")).unwrap_or_default();
            return Err(refused(&format!("the IdP answered {error}{detail}")));
        }
        let (Some(code), Some(state)) = (param("code"), param("state")) else {
            return Err(refused("the callback has no code and state"));
        };
        let sealed = self.jar.get(headers, LOGIN_COOKIE).map_err(|_| refused("several login cookies"))?;
        let sealed = sealed.ok_or_else(|| refused("no login in progress in this browser (login cookie missing)"))?;
        let (plain, _) =
            self.keys.open(Purpose::Login, sealed, now).map_err(|e| refused(&format!("login cookie: {e}")))?;
        let login: LoginData = serde_json::from_slice(&plain).map_err(|_| refused("unreadable login cookie"))?;
        if login.state != state {
            return Err(refused("the state does not match this browser's login"));
        }
        if now > login.created.saturating_add(self.jar.login) {
            return Err(refused("the login took too long"));
        }
        if !self.used_states.entry(login.state.clone()).or_insert(()).is_fresh() {
            return Err(refused("this sign-in was already completed (a replayed callback)"));
        }
        let secret = self.client_secret.as_deref();
        let id_token = self
            .idp
            .exchange(code, &login.verifier, &oidc::ClientAuth { secret, ..self.client() })
            .await
            .map_err(|e| refused(&e.to_string()))?;
        let principal = auth
            .verify_id_token(&id_token, &self.config.issuer.issuer, &self.config.client_id)
            .await
            .map_err(|e| match e {
                AuthError::Invalid(m) => refused(&format!("the ID token was refused: {m}")),
                AuthError::KeysUnavailable(_) => GateError::KeysUnavailable,
            })?;
        if principal.claims.get("nonce").and_then(|n| n.as_str()) != Some(login.nonce.as_str()) {
            return Err(refused("the ID token's nonce does not match this browser's login"));
        }
        let data = self.session_data(principal, now);
        let session = self.jar.issue(&self.keys, &data).ok_or(GateError::Internal)?;
        let clear = self.jar.clear(LOGIN_COOKIE).ok_or(GateError::Internal)?;
        tracing::info!(sub = %data.sub, "browser signed in");
        redirect(&login.return_to, vec![session, clear])
    }

    fn session_data(&self, principal: Principal, now: u64) -> SessionData {
        let mut kept = serde_json::Map::new();
        let groups_root = self.config.issuer.groups_claim.first().map(String::as_str);
        for (k, v) in principal.claims.as_object().into_iter().flatten() {
            if session::KEPT_CLAIMS.contains(&k.as_str()) || Some(k.as_str()) == groups_root {
                kept.insert(k.clone(), v.clone());
            }
        }
        SessionData {
            sub: principal.sub,
            iss: principal.issuer,
            groups: principal.groups,
            claims: serde_json::Value::Object(kept),
            signed_in: now,
            seen: now,
        }
    }

    /// Sign-out: the session cookie is cleared, then the IdP's end-session endpoint (when it has one) ends its
    /// session and returns to the gate. A POST must come from a public origin.
    async fn sign_out(&self, method: &Method, headers: &HeaderMap) -> Result<Response<GateBody>, GateError> {
        self.csrf(method, headers)?;
        let clear = self.jar.clear(SESSION_COOKIE).ok_or(GateError::Internal)?;
        let home = format!("{}/", self.config.public_origins.first().map(String::as_str).unwrap_or(""));
        let target = match self.idp.discovery().await {
            Ok(doc) => oidc::end_session_url(&doc, &self.config.client_id, &home).unwrap_or(home),
            Err(e) => {
                tracing::warn!(error = %e, "the IdP's discovery document is unavailable; signing out locally only");
                home
            }
        };
        redirect(&target, vec![clear])
    }

    /// Who is signed in, as JSON (the session, or a bearer token).
    async fn me(&self, headers: &HeaderMap, auth: &Authenticator, now: u64) -> Result<Response<GateBody>, GateError> {
        let (principal, refresh) = match self.session(headers, now) {
            Session::Valid(p, refresh) => (std::sync::Arc::new(p), refresh),
            Session::Refused(e) => return Err(GateError::Unauthenticated(e.to_string())),
            Session::Absent => {
                (auth.authenticate(headers, None).await.map_err(|e| GateError::Unauthenticated(e.to_string()))?, None)
            }
        };
        let doc = serde_json::json!({
            "sub": principal.sub,
            "issuer": principal.issuer,
            "groups": principal.groups,
            "via": principal.via.as_str(),
            "logout": "/gate/logout",
        });
        let mut resp = Response::new(body::full(Bytes::from(doc.to_string())));
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(cookie) = refresh {
            resp.headers_mut().append(header::SET_COOKIE, cookie);
        }
        Ok(resp)
    }

    fn client(&self) -> oidc::ClientAuth<'_> {
        oidc::ClientAuth { id: &self.config.client_id, secret: None, redirect_uri: self.config.redirect_url.as_str() }
    }
}

/// A `302 Found` to `location`, setting `cookies`, never cached.
fn redirect(location: &str, cookies: Vec<HeaderValue>) -> Result<Response<GateBody>, GateError> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::FOUND;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_str(location).map_err(|_| GateError::Internal)?);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        h.append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

fn idp_unavailable(e: oidc::IdpError) -> GateError {
    tracing::error!(error = %e, "the sign-in issuer is unavailable");
    GateError::Unauthenticated(format!("sign-in is unavailable: {e}"))
}

fn read_secret(source: &SecretSource) -> Result<String, BrowserError> {
    let text = match source {
        SecretSource::Env(var) => std::env::var(var).map_err(|_| BrowserError(format!("{source} is not set")))?,
        SecretSource::File(path) => {
            std::fs::read_to_string(path).map_err(|e| BrowserError(format!("{source} cannot be read: {e}")))?
        }
    };
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(BrowserError(format!("{source} is empty")));
    }
    Ok(text)
}

fn read_key(source: &SecretSource) -> Result<Vec<u8>, BrowserError> {
    seal::decode_key(&read_secret(source)?).map_err(|e| BrowserError(format!("cookie key in {source}: {e}")))
}

/// The current time in Unix seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn browser(extra: &str, tls: bool) -> Browser {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cookie.key"), "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=").unwrap();
        let base = crate::config::TEST_BASE;
        let text = format!(
            r#"{base}
[browser]
issuer = "https://idp.example"
client_id = "gate"
redirect_url = "https://gate.example/gate/callback"
public_origins = ["https://gate.example"]
cookie_key_file = "cookie.key"
{extra}
"#
        );
        let config = Config::parse(&text, &dir.path().join("gate.toml")).unwrap();
        Browser::start(config.browser.as_ref().unwrap(), tls).unwrap()
    }

    #[test]
    fn cookies_are_secure_and_host_only_behind_tls_or_with_tls() {
        assert!(!browser("", false).jar.secure);
        assert!(browser("behind_tls = true", false).jar.secure);
        assert!(browser("", true).jar.secure);
        assert_eq!(browser("", true).jar.name(SESSION_COOKIE), "__Host-mlflow-gate-session");
    }

    #[test]
    fn a_missing_secret_names_its_source_only() {
        let dir = tempfile::tempdir().unwrap();
        let source = SecretSource::Env("MLFLOW_GATE_TEST_SURELY_UNSET_SECRET".into());
        let e = read_secret(&source).err().unwrap().to_string();
        assert!(e.contains("$MLFLOW_GATE_TEST_SURELY_UNSET_SECRET is not set"), "{e}");
        let file = SecretSource::File(dir.path().join("absent"));
        assert!(read_secret(&file).is_err());
    }
}
