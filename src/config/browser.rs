//! Start-up, `[browser]`: sign-in for people in browsers (OpenID Connect authorization code with PKCE) and the
//! session cookie. Parsed and validated with the rest of the config; secrets (client secret, cookie keys) are named
//! here by their source and read when the gate starts (`browser::Secrets::load`), never logged.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{secs, ConfigError, IssuerConfig, Validator};

/// Where a secret comes from: an environment variable or a file (its text, surrounding whitespace ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file.
    File(PathBuf),
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Env(v) => write!(f, "environment variable ${v}"),
            SecretSource::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

/// A retired cookie key, still accepted (for reading sessions only) until `accept_until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousKey {
    /// Where the key is.
    pub key: SecretSource,
    /// Unix time (seconds) after which cookies sealed with it are refused.
    pub accept_until: u64,
}

/// The validated `[browser]` section.
#[derive(Debug, Clone)]
pub struct BrowserConfig {
    /// The issuer people sign in with: one of `[[auth.issuers]]` (its keys, `groups_claim` and subject rule).
    pub issuer: IssuerConfig,
    /// Where the issuer's OpenID Connect discovery document is.
    pub discovery_url: String,
    /// The gate's OAuth client id (the ID token's `aud` must be it).
    pub client_id: String,
    /// The client secret (`client_secret_env` or `client_secret_file`); `None` for a public client.
    pub client_secret: Option<SecretSource>,
    /// The callback URL registered at the IdP; its path is the gate's callback.
    pub redirect_url: url::Url,
    /// Origins (`scheme://host[:port]`) the gate is reached at; CSRF checks compare `Origin` with them.
    pub public_origins: Vec<String>,
    /// Scopes asked for (always with `openid`).
    pub scopes: Vec<String>,
    /// The key sealing new cookies.
    pub cookie_key: SecretSource,
    /// Retired keys still accepted for a grace period.
    pub previous_cookie_keys: Vec<PreviousKey>,
    /// A session ends this long after sign-in, however active.
    pub session_absolute: Duration,
    /// A session ends after this long without a request.
    pub session_idle: Duration,
    /// How long a sign-in (from the redirect to the IdP to the callback) may take.
    pub login_timeout: Duration,
    /// The gate sits behind a TLS-terminating proxy: cookies are `Secure` (and `__Host-`) although it serves HTTP.
    pub behind_tls: bool,
}

impl BrowserConfig {
    /// The path of the callback (from `redirect_url`).
    pub fn callback_path(&self) -> &str {
        self.redirect_url.path()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBrowser {
    issuer: String,
    discovery_url: Option<String>,
    client_id: String,
    client_secret_env: Option<String>,
    client_secret_file: Option<String>,
    redirect_url: String,
    public_origins: Vec<String>,
    scopes: Option<Vec<String>>,
    cookie_key_env: Option<String>,
    cookie_key_file: Option<String>,
    #[serde(default)]
    previous_cookie_keys: Vec<RawPreviousKey>,
    session_absolute_secs: Option<u64>,
    session_idle_secs: Option<u64>,
    login_timeout_secs: Option<u64>,
    #[serde(default)]
    behind_tls: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPreviousKey {
    key_env: Option<String>,
    key_file: Option<String>,
    accept_until: toml::value::Datetime,
}

impl Validator {
    pub(super) fn browser(&self, raw: RawBrowser, issuers: &[IssuerConfig]) -> Result<BrowserConfig, ConfigError> {
        let issuer = issuers.iter().find(|i| i.issuer == raw.issuer).cloned().ok_or_else(|| {
            self.err(
                "browser.issuer",
                format!(
                    "{:?} is not one of the [[auth.issuers]]; sign-in uses that issuer's keys, groups_claim and subject rule",
                    raw.issuer
                ),
            )
        })?;
        let discovery_url = match raw.discovery_url {
            Some(u) => self.url("browser.discovery_url", u)?,
            None => format!("{}/.well-known/openid-configuration", raw.issuer.trim_end_matches('/')),
        };
        if raw.client_id.trim().is_empty() {
            return Err(self.err("browser.client_id", "must not be empty"));
        }
        let client_secret = self.secret("browser.client_secret", raw.client_secret_env, raw.client_secret_file)?;
        let public_origins = self.origins(&raw.public_origins)?;
        let redirect_url = self.redirect_url(&raw.redirect_url, &public_origins)?;
        let mut scopes = raw.scopes.unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }
        let cookie_key =
            self.secret("browser.cookie_key", raw.cookie_key_env, raw.cookie_key_file)?.ok_or_else(|| {
                self.err(
                    "browser.cookie_key_env",
                    "missing: set cookie_key_env = \"VAR\" or cookie_key_file = \"/path\", holding base64 of 32 \
                     random bytes (`head -c 32 /dev/urandom | base64`)",
                )
            })?;
        let previous_cookie_keys = raw
            .previous_cookie_keys
            .into_iter()
            .enumerate()
            .map(|(i, p)| self.previous_key(i, p))
            .collect::<Result<Vec<_>, _>>()?;
        let positive = |key: &str, v: Option<u64>, default: u64| match v {
            Some(0) => Err(self.err(&format!("browser.{key}"), "must be at least 1 second")),
            v => Ok(secs(v, default)),
        };
        let session_absolute = positive("session_absolute_secs", raw.session_absolute_secs, 12 * 3600)?;
        let session_idle = positive("session_idle_secs", raw.session_idle_secs, 3600)?;
        if session_idle > session_absolute {
            return Err(self.err("browser.session_idle_secs", "must not be longer than session_absolute_secs"));
        }
        Ok(BrowserConfig {
            issuer,
            discovery_url,
            client_id: raw.client_id,
            client_secret,
            redirect_url,
            public_origins,
            scopes,
            cookie_key,
            previous_cookie_keys,
            session_absolute,
            session_idle,
            login_timeout: positive("login_timeout_secs", raw.login_timeout_secs, 600)?,
            behind_tls: raw.behind_tls,
        })
    }

    fn secret(
        &self,
        key: &str,
        env: Option<String>,
        file: Option<String>,
    ) -> Result<Option<SecretSource>, ConfigError> {
        match (env, file) {
            (Some(_), Some(_)) => {
                Err(self.err(&format!("{key}_env"), format!("set {key}_env or {key}_file, not both")))
            }
            (Some(v), None) if v.is_empty() => Err(self.err(&format!("{key}_env"), "must name a variable")),
            (Some(v), None) => Ok(Some(SecretSource::Env(v))),
            (None, Some(f)) => Ok(Some(SecretSource::File(self.path(&f)))),
            (None, None) => Ok(None),
        }
    }

    fn previous_key(&self, i: usize, raw: RawPreviousKey) -> Result<PreviousKey, ConfigError> {
        let key = format!("browser.previous_cookie_keys[{i}]");
        let source = self
            .secret(&format!("{key}.key"), raw.key_env, raw.key_file)?
            .ok_or_else(|| self.err(&format!("{key}.key_env"), "missing: set key_env or key_file"))?;
        let accept_until = unix_seconds(&raw.accept_until).ok_or_else(|| {
            self.err(
                &format!("{key}.accept_until"),
                "must be a date and time with an offset, such as 2026-12-01T00:00:00Z",
            )
        })?;
        Ok(PreviousKey { key: source, accept_until })
    }

    fn origins(&self, raw: &[String]) -> Result<Vec<String>, ConfigError> {
        if raw.is_empty() {
            return Err(self.err(
                "browser.public_origins",
                "at least one origin is required, such as \"https://mlflow.example.com\" (CSRF checks compare the \
                 Origin header with these; Host is never trusted for it)",
            ));
        }
        raw.iter()
            .map(|o| {
                let parsed = url::Url::parse(o).ok().filter(|u| matches!(u.scheme(), "http" | "https"));
                match parsed {
                    Some(u) if u.host().is_some() && o.trim_end_matches('/') == u.origin().ascii_serialization() => {
                        Ok(u.origin().ascii_serialization())
                    }
                    _ => Err(self.err(
                        "browser.public_origins",
                        format!("{o:?} is not an origin: scheme://host[:port], no path (default ports omitted)"),
                    )),
                }
            })
            .collect()
    }

    fn redirect_url(&self, raw: &str, origins: &[String]) -> Result<url::Url, ConfigError> {
        let key = "browser.redirect_url";
        let u = url::Url::parse(raw).map_err(|e| self.err(key, format!("{raw:?} is not a URL: {e}")))?;
        if !origins.contains(&u.origin().ascii_serialization()) {
            return Err(self.err(key, format!("{raw:?} is not at one of browser.public_origins")));
        }
        if !u.path().starts_with("/gate/") || u.query().is_some() || u.fragment().is_some() {
            return Err(self.err(key, "its path must be under /gate/ (e.g. /gate/callback), with no query"));
        }
        Ok(u)
    }
}

/// A TOML offset date-time as Unix seconds.
fn unix_seconds(dt: &toml::value::Datetime) -> Option<u64> {
    let (date, time, offset) = (dt.date?, dt.time?, dt.offset?);
    let offset_minutes: i64 = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i64::from(minutes),
    };
    let days = crate::audit::days_from_civil(i64::from(date.year), i64::from(date.month), i64::from(date.day));
    let secs = days * 86_400 + i64::from(time.hour) * 3600 + i64::from(time.minute) * 60 + i64::from(time.second)
        - offset_minutes * 60;
    u64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    const BROWSER: &str = r#"
[browser]
issuer = "https://idp.example"
client_id = "mlflow-gate"
client_secret_env = "GATE_OIDC_SECRET"
redirect_url = "https://gate.example/gate/callback"
public_origins = ["https://gate.example"]
cookie_key_file = "cookie.key"
[[browser.previous_cookie_keys]]
key_env = "OLD_COOKIE_KEY"
accept_until = 2026-12-01T00:00:00Z
"#;

    fn parse(extra: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(&format!("{}{extra}", crate::config::TEST_BASE), Path::new("/etc/gate/gate.toml"))
    }

    fn err_of(extra: &str) -> String {
        parse(extra).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn browser_section_resolves_defaults_and_sources() {
        let c = parse(BROWSER).unwrap();
        let b = c.browser.unwrap();
        assert_eq!(b.issuer.issuer, "https://idp.example");
        assert_eq!(b.discovery_url, "https://idp.example/.well-known/openid-configuration");
        assert_eq!(b.client_secret, Some(SecretSource::Env("GATE_OIDC_SECRET".into())));
        assert_eq!(b.cookie_key, SecretSource::File("/etc/gate/cookie.key".into()));
        assert_eq!(b.previous_cookie_keys[0].accept_until, 1_796_083_200);
        assert_eq!(b.callback_path(), "/gate/callback");
        assert_eq!(b.scopes, ["openid", "profile", "email"]);
        assert_eq!((b.session_absolute.as_secs(), b.session_idle.as_secs()), (43_200, 3600));
        assert!(!b.behind_tls);
        assert!(parse("").unwrap().browser.is_none());
    }

    #[test]
    fn browser_config_errors_name_the_key() {
        let cases = [
            (BROWSER.replace("https://idp.example\"\nclient", "https://other.example\"\nclient"), "browser.issuer"),
            (BROWSER.replace("[\"https://gate.example\"]", "[]"), "browser.public_origins"),
            (BROWSER.replace("[\"https://gate.example\"]", "[\"https://gate.example/ui\"]"), "browser.public_origins"),
            (
                BROWSER.replace("https://gate.example/gate/callback", "https://evil.example/gate/callback"),
                "browser.redirect_url",
            ),
            (BROWSER.replace("/gate/callback", "/callback"), "browser.redirect_url"),
            (BROWSER.replace("cookie_key_file = \"cookie.key\"\n", ""), "browser.cookie_key_env"),
            (
                BROWSER.replace(
                    "client_secret_env = \"GATE_OIDC_SECRET\"",
                    "client_secret_env = \"A\"\nclient_secret_file = \"s\"",
                ),
                "browser.client_secret_env",
            ),
            (
                BROWSER.replace("accept_until = 2026-12-01T00:00:00Z", "accept_until = 2026-12-01T00:00:00"),
                "browser.previous_cookie_keys[0].accept_until",
            ),
            (BROWSER.replace("[browser]", "[browser]\nsession_idle_secs = 0"), "browser.session_idle_secs"),
            (BROWSER.replace("[browser]", "[browser]\nsession_idle_secs = 90000"), "browser.session_idle_secs"),
            (BROWSER.replace("[browser]", "[browser]\ncolour = 1"), "colour"),
        ];
        for (text, key) in cases {
            let e = err_of(&text);
            assert!(e.contains(key), "expected {key} in {e:?}");
        }
    }

    #[test]
    fn toml_datetimes_become_unix_seconds() {
        let dt: toml::value::Datetime = "2026-12-01T00:00:00Z".parse().unwrap();
        assert_eq!(unix_seconds(&dt), Some(1_796_083_200));
        let dt: toml::value::Datetime = "1970-01-01T01:00:00+01:00".parse().unwrap();
        assert_eq!(unix_seconds(&dt), Some(0));
        let local: toml::value::Datetime = "2026-12-01T00:00:00".parse().unwrap();
        assert_eq!(unix_seconds(&local), None);
    }
}
