//! Start-up, before any request: the TOML config file is parsed into raw serde structs (unknown keys refused) and
//! validated into a [`Config`]. Every error names the file and the key at fault.

mod fleet;
pub use fleet::FleetConfig;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

mod browser;
pub use browser::{BrowserConfig, PreviousKey, SecretSource};

/// Which engine evaluates requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// The bytecode VM when the bundle compiles to it and agrees with the interpreter on the samples.
    #[default]
    Auto,
    /// Always the interpreter.
    Interpreter,
}

/// A config error that names the file and the key (or the TOML position) at fault.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    /// The config file.
    pub file: String,
    /// The dotted key at fault, e.g. `auth.issuers[0].algorithms`.
    pub key: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

/// The validated configuration of a gate.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (relative paths in it are resolved against its directory).
    pub source: PathBuf,
    /// `[server]`
    pub server: ServerConfig,
    /// `[upstream]`
    pub upstream: UpstreamConfig,
    /// `[auth]`
    pub auth: AuthConfig,
    /// `[policy]`
    pub policy: PolicyConfig,
    /// `[webhook_delivery]`
    pub webhook_delivery: WebhookDeliveryConfig,
    /// `[[webhooks]]`, in file order
    pub webhooks: Vec<WebhookConfig>,
    /// `[admin]`: the metrics and health listener, if configured.
    pub admin: Option<AdminConfig>,
    /// `[audit]`: where decision records go, the chain's key and the checkpoints (none when absent).
    pub audit: Option<crate::audit::Settings>,
    /// `[browser]`: sign-in for browsers and the session cookie (none when absent: bearer tokens only).
    pub browser: Option<BrowserConfig>,
    /// `[fleet]`: this replica's id and the fleet's shared database (see `config/fleet.rs`).
    pub fleet: FleetConfig,
}

/// `[admin]`: a separate listener for `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Its address.
    pub listen: SocketAddr,
}

/// `[server]`: the client-facing listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Largest request body the gate buffers to evaluate (JSON API bodies); larger ones get 413.
    pub max_body_bytes: usize,
    /// How long a client may take to send the request headers.
    pub header_read_timeout: Duration,
    /// On SIGTERM, how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
    /// `[server.tls]`: TLS termination (plain HTTP when absent).
    pub tls: Option<crate::tls::TlsSettings>,
    /// Overload protection: body limits by route class, timeouts and capacity caps (all `[server]` keys).
    pub load: LoadLimits,
}

/// Overload protection (`[server]` keys; see the README's "Overload protection" section for the memory bound the
/// defaults give).
#[derive(Debug, Clone)]
pub struct LoadLimits {
    /// `max_read_body_bytes`: largest JSON body of a read or search route (default 64 KiB).
    pub max_read_body_bytes: usize,
    /// `max_graphql_body_bytes`: largest `/graphql` body (default 64 KiB).
    pub max_graphql_body_bytes: usize,
    /// `max_buffered_body_bytes`: request-body bytes all requests together may hold in memory (default 64 MiB).
    pub max_buffered_body_bytes: usize,
    /// `body_idle_timeout_secs`: longest pause between two pieces of a request body (default 10 s).
    pub body_idle_timeout: Duration,
    /// `body_read_timeout_secs`: longest time to receive a whole body the gate reads (default 30 s).
    pub body_read_timeout: Duration,
    /// `idle_timeout_secs`: a connection with no request in flight for this long is closed (default 60 s).
    pub idle_timeout: Duration,
    /// `max_connections`: open client connections (default 256); more are refused with 503.
    pub max_connections: usize,
    /// `max_concurrent_requests`: requests in flight (default 128); more are refused with 503.
    pub max_concurrent_requests: usize,
    /// `max_heavy_evaluations`: large bodies parsed and evaluated at once, off the async workers (default: half
    /// the CPUs, at least 1).
    pub max_heavy_evaluations: usize,
    /// `http2_max_concurrent_streams`: streams per HTTP/2 connection (default 16).
    pub http2_max_concurrent_streams: u32,
    /// `http2_stream_window_bytes`: HTTP/2 flow-control window per stream (default 64 KiB).
    pub http2_stream_window_bytes: u32,
    /// `http2_connection_window_bytes`: HTTP/2 flow-control window per connection (default 256 KiB).
    pub http2_connection_window_bytes: u32,
}

/// `[upstream]`: the MLflow server the gate protects.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Base URL (scheme and authority only) of the MLflow server.
    pub url: http::Uri,
    /// `Host` header sent upstream (MLflow's host check must accept it); defaults to the URL's authority.
    pub host_header: String,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed until MLflow's response headers arrive (bodies then stream without a deadline).
    pub timeout: Duration,
    /// Environment variable holding the `Authorization` value of the gate's own look-ups and stamps (only when
    /// MLflow itself requires credentials).
    pub service_authorization_env: Option<String>,
    /// Extra CA (PEM) trusted for an `https://` upstream, besides the system roots.
    pub ca_file: Option<PathBuf>,
}

/// `[auth]`: who may call.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Trusted token issuers.
    pub issuers: Vec<IssuerConfig>,
    /// Longest accepted bearer token, in bytes.
    pub max_token_bytes: usize,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// How long fetched keys are used before they are fetched again.
    pub jwks_cache: Duration,
    /// Minimum time between two fetches caused by a token with an unknown `kid` (or by a failed fetch).
    pub jwks_min_refresh: Duration,
    /// Client-certificate identities accepted as principals (mTLS), when a request sends no bearer token.
    pub client_certs: Vec<ClientCertIdentity>,
}

/// One `[[auth.client_certs]]` entry: a verified client certificate identity and the groups it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertIdentity {
    /// SPIFFE ID (`spiffe://...` URI SAN) or subject CN.
    pub identity: String,
    /// Groups of the principal.
    pub groups: Vec<String>,
}

/// One `[[auth.issuers]]` entry.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// Expected `iss` claim, compared exactly.
    pub issuer: String,
    /// Accepted `aud` values; a token must carry at least one of them.
    pub audiences: Vec<String>,
    /// Signature algorithms accepted from this issuer (asymmetric only).
    pub algorithms: Vec<Algorithm>,
    /// Where the issuer's public keys come from.
    pub keys: KeySource,
    /// Dotted path of the claim that holds the caller's groups (e.g. `realm_access.roles`).
    pub groups_claim: Vec<String>,
    /// How the `sub` claim becomes the caller's identity.
    pub subject: SubjectRule,
}

/// How an issuer's `sub` becomes an identity (what the gate stamps and the policy compares):
/// `prefix + fold(sub)`, or `prefix + sub` for an IdP whose subjects are opaque and case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRule {
    /// Compare subjects folded (NFKC + case folding + default-ignorables removed, see `fold`): `Alice` is
    /// `alice`. `subject_normalization = "casefold"` (the default); `"exact"` turns it off.
    pub fold: bool,
    /// Put before every subject of this issuer (`subject_prefix`), so that no subject of one issuer is the
    /// identity of another's. Empty for the first issuer by default, `"<issuer>#"` for every other one.
    pub prefix: String,
}

impl SubjectRule {
    /// The identity of a subject of this issuer.
    pub fn identity(&self, sub: &str) -> String {
        if self.fold {
            format!("{}{}", self.prefix, crate::fold::fold(sub))
        } else {
            format!("{}{sub}", self.prefix)
        }
    }
}

/// Exactly one source of an issuer's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS document at a URL.
    JwksUrl(String),
    /// A JWKS JSON file on disk (re-read when the cache expires).
    JwksFile(PathBuf),
    /// OpenID Connect discovery: `jwks_uri` is read from this document.
    Discovery(String),
}

/// `[policy]`: the Rego bundle.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// Directory holding `*.rego` and `*.json` files.
    pub dir: PathBuf,
    /// Rule that yields the decision document.
    pub entrypoint: String,
    /// Wall-clock budget for one evaluation; a policy that runs longer denies the request.
    pub eval_timeout: Duration,
    /// How often the directory is checked for changed files (zero: never; SIGHUP still reloads).
    pub reload_interval: Duration,
    /// Which engine evaluates requests (`auto`: the bytecode VM when the bundle allows it).
    pub engine: EngineChoice,
    /// Decisions kept in the decision cache (zero: every request is evaluated; `crate::policy::decisions`).
    pub decision_cache_entries: u64,
}

/// Decisions cached by default (`[policy] decision_cache_entries`).
pub const DEFAULT_DECISION_CACHE_ENTRIES: u64 = 10_000;

/// `[webhook_delivery]`: how registry-event webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookDeliveryConfig {
    /// Directory of pending deliveries (one file each); `None` only when no `[[webhooks]]` are configured.
    pub spool_dir: Option<PathBuf>,
    /// Attempts per delivery before it is dropped.
    pub max_attempts: u32,
    /// Backoff ceiling after the first failed attempt (doubles per attempt; full jitter).
    pub initial_backoff: Duration,
    /// Largest backoff ceiling.
    pub max_backoff: Duration,
    /// Time allowed for one attempt (connect, send, response headers and body).
    pub timeout: Duration,
    /// Deliveries attempted at the same time.
    pub concurrency: usize,
}

/// One `[[webhooks]]` entry: a receiver of Databricks-shaped registry events.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Stable id sent as `webhook_id`: the first 16 hex digits of SHA-256 of `"<url>\n<index>"`.
    pub id: String,
    /// Where events are POSTed (`http` or `https`).
    pub url: http::Uri,
    /// Event names this webhook receives.
    pub events: Vec<String>,
    /// Only events about this registered model (`None`: registry-wide).
    pub model_name: Option<String>,
    /// Environment variable holding the HMAC secret (read at start).
    pub secret_env: Option<String>,
    /// Environment variable holding the `Authorization` header value (read at start).
    pub authorization_env: Option<String>,
    /// Verify the receiver's TLS certificate.
    pub verify_tls: bool,
    /// Extra trusted CA certificates (PEM), added to the system roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    upstream: Option<RawUpstream>,
    auth: Option<RawAuth>,
    policy: Option<RawPolicy>,
    #[serde(default)]
    webhook_delivery: RawWebhookDelivery,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
    admin: Option<RawAdmin>,
    audit: Option<RawAudit>,
    browser: Option<browser::RawBrowser>,
    #[serde(default)]
    fleet: fleet::RawFleet,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    sink: String,
    file: Option<String>,
    max_bytes: Option<u64>,
    keep: Option<usize>,
    key_file: Option<String>,
    key_env: Option<String>,
    checkpoint_every_records: Option<u64>,
    checkpoint_interval_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: String,
    key_file: String,
    client_ca_file: Option<String>,
    #[serde(default)]
    client_cert_required: bool,
    reload_interval_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebhookDelivery {
    spool_dir: Option<String>,
    max_attempts: Option<u32>,
    initial_backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    timeout_secs: Option<u64>,
    concurrency: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Option<String>,
    #[serde(default)]
    events: Vec<String>,
    model_name: Option<String>,
    secret_env: Option<String>,
    authorization_env: Option<String>,
    verify_tls: Option<bool>,
    ca_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    max_body_bytes: Option<usize>,
    header_read_timeout_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    tls: Option<RawTls>,
    max_read_body_bytes: Option<usize>,
    max_graphql_body_bytes: Option<usize>,
    max_buffered_body_bytes: Option<usize>,
    body_idle_timeout_secs: Option<u64>,
    body_read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    max_concurrent_requests: Option<usize>,
    max_heavy_evaluations: Option<usize>,
    http2_max_concurrent_streams: Option<u32>,
    http2_stream_window_bytes: Option<u32>,
    http2_connection_window_bytes: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Option<String>,
    host_header: Option<String>,
    connect_timeout_secs: Option<u64>,
    timeout_secs: Option<u64>,
    service_authorization_env: Option<String>,
    ca_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    issuers: Vec<RawIssuer>,
    max_token_bytes: Option<usize>,
    leeway_secs: Option<u64>,
    jwks_cache_secs: Option<u64>,
    jwks_min_refresh_secs: Option<u64>,
    #[serde(default)]
    client_certs: Vec<RawClientCert>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientCert {
    identity: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    issuer: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    algorithms: Vec<String>,
    jwks_url: Option<String>,
    jwks_file: Option<String>,
    discovery_url: Option<String>,
    groups_claim: Option<String>,
    subject_normalization: Option<String>,
    subject_prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    dir: Option<String>,
    entrypoint: Option<String>,
    eval_timeout_ms: Option<u64>,
    reload_interval_ms: Option<u64>,
    engine: Option<String>,
    decision_cache_entries: Option<u64>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            key: "(file)".into(),
            message: format!("cannot read the config file: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let v = Validator { file: path.display().to_string(), base: base_dir(path) };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().to_string();
            let at = e.span().map(|s| line_col(text, s.start)).unwrap_or_default();
            v.err("(syntax)", format!("{message}{at}"))
        })?;
        let (server, upstream) = (v.server(raw.server)?, v.upstream(raw.upstream)?);
        let auth = v.auth(raw.auth)?;
        let browser = raw.browser.map(|b| v.browser(b, &auth.issuers)).transpose()?;
        let fleet = v.fleet(raw.fleet, raw.webhook_delivery.timeout_secs.unwrap_or(10))?;
        let spool_needed = !raw.webhooks.is_empty() && fleet.database_url_env.is_none();
        if fleet.database_url_env.is_some() && raw.webhook_delivery.spool_dir.is_some() {
            let why = "pending deliveries go to the fleet database (fleet.database_url_env): remove spool_dir";
            return Err(v.err("webhook_delivery.spool_dir", why));
        }
        Ok(Config {
            source: path.to_path_buf(),
            server,
            upstream,
            auth,
            policy: v.policy(raw.policy)?,
            webhook_delivery: v.webhook_delivery(raw.webhook_delivery, spool_needed)?,
            webhooks: raw.webhooks.into_iter().enumerate().map(|(i, r)| v.webhook(i, r)).collect::<Result<_, _>>()?,
            admin: raw.admin.map(|a| v.admin(a)).transpose()?,
            audit: raw
                .audit
                .map(|a| v.audit(a))
                .transpose()?
                .map(|a| crate::audit::Settings { replica: Some(fleet.replica_id.clone()), ..a }),
            browser,
            fleet,
        })
    }
}

fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn line_col(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(" (at line {line}, column {col})")
}

struct Validator {
    file: String,
    base: PathBuf,
}

impl Validator {
    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError { file: self.file.clone(), key: key.into(), message: message.into() }
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn server(&self, raw: RawServer) -> Result<ServerConfig, ConfigError> {
        let load = self.load_limits(&raw)?;
        let listen = raw.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen.parse().map_err(|_| {
            self.err("server.listen", format!("{listen:?} is not an address such as \"127.0.0.1:8080\""))
        })?;
        let max_body_bytes = raw.max_body_bytes.unwrap_or(10 * 1024 * 1024);
        if max_body_bytes == 0 {
            return Err(self.err("server.max_body_bytes", "must be greater than 0"));
        }
        Ok(ServerConfig {
            listen,
            max_body_bytes,
            header_read_timeout: secs(raw.header_read_timeout_secs, 30),
            shutdown_grace: secs(raw.shutdown_grace_secs, 30),
            tls: raw.tls.map(|t| self.tls(t)).transpose()?,
            load,
        })
    }

    fn load_limits(&self, raw: &RawServer) -> Result<LoadLimits, ConfigError> {
        let positive = |key: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(self.err(&format!("server.{key}"), "must be greater than 0")),
            v => Ok(v.unwrap_or(default)),
        };
        let positive_secs = |key: &str, v: Option<u64>, default: u64| match v {
            Some(0) => Err(self.err(&format!("server.{key}"), "must be at least 1 second")),
            v => Ok(secs(v, default)),
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        // h2 requires windows of at least 65,535 bytes to be useful and at most 2^31-1.
        let window = |key: &str, v: Option<u32>, default: u32| match v {
            Some(w) if !(16 * 1024..=i32::MAX as u32).contains(&w) => {
                Err(self.err(&format!("server.{key}"), "must be between 16384 and 2147483647"))
            }
            v => Ok(v.unwrap_or(default)),
        };
        let max_buffered_body_bytes = positive("max_buffered_body_bytes", raw.max_buffered_body_bytes, 64 << 20)?;
        if u32::try_from(max_buffered_body_bytes).is_err() {
            return Err(self.err("server.max_buffered_body_bytes", "must be below 4 GiB"));
        }
        Ok(LoadLimits {
            max_read_body_bytes: positive("max_read_body_bytes", raw.max_read_body_bytes, 64 * 1024)?,
            max_graphql_body_bytes: positive("max_graphql_body_bytes", raw.max_graphql_body_bytes, 64 * 1024)?,
            max_buffered_body_bytes,
            body_idle_timeout: positive_secs("body_idle_timeout_secs", raw.body_idle_timeout_secs, 10)?,
            body_read_timeout: positive_secs("body_read_timeout_secs", raw.body_read_timeout_secs, 30)?,
            idle_timeout: positive_secs("idle_timeout_secs", raw.idle_timeout_secs, 60)?,
            max_connections: positive("max_connections", raw.max_connections, 256)?,
            max_concurrent_requests: positive("max_concurrent_requests", raw.max_concurrent_requests, 128)?,
            max_heavy_evaluations: positive("max_heavy_evaluations", raw.max_heavy_evaluations, (cpus / 2).max(1))?,
            http2_max_concurrent_streams: positive(
                "http2_max_concurrent_streams",
                raw.http2_max_concurrent_streams.map(|n| n as usize),
                16,
            )? as u32,
            http2_stream_window_bytes: window("http2_stream_window_bytes", raw.http2_stream_window_bytes, 64 * 1024)?,
            http2_connection_window_bytes: window(
                "http2_connection_window_bytes",
                raw.http2_connection_window_bytes,
                256 * 1024,
            )?,
        })
    }

    fn tls(&self, raw: RawTls) -> Result<crate::tls::TlsSettings, ConfigError> {
        if raw.client_cert_required && raw.client_ca_file.is_none() {
            return Err(self.err("server.tls.client_cert_required", "needs server.tls.client_ca_file"));
        }
        Ok(crate::tls::TlsSettings {
            cert_file: self.path(&raw.cert_file),
            key_file: self.path(&raw.key_file),
            client_ca_file: raw.client_ca_file.map(|f| self.path(&f)),
            client_cert_required: raw.client_cert_required,
            reload_interval: secs(raw.reload_interval_secs, 10),
        })
    }

    fn admin(&self, raw: RawAdmin) -> Result<AdminConfig, ConfigError> {
        let listen = raw.listen.parse().map_err(|_| {
            self.err("admin.listen", format!("{:?} is not an address such as \"127.0.0.1:9090\"", raw.listen))
        })?;
        Ok(AdminConfig { listen })
    }

    fn audit(&self, raw: RawAudit) -> Result<crate::audit::Settings, ConfigError> {
        let sink = match (raw.sink.as_str(), raw.file) {
            ("stdout", None) => crate::audit::Sink::Stdout,
            ("file", Some(f)) => crate::audit::Sink::File {
                path: self.path(&f),
                max_bytes: raw.max_bytes.unwrap_or(100 * 1024 * 1024).max(1024),
                keep: raw.keep.unwrap_or(10).max(1),
            },
            ("file", None) => return Err(self.err("audit.file", "sink = \"file\" needs file = \"...\"")),
            ("stdout", Some(_)) => return Err(self.err("audit.file", "only with sink = \"file\"")),
            (other, _) => return Err(self.err("audit.sink", format!("{other:?} is not \"file\" or \"stdout\""))),
        };
        // Fail closed: an unkeyed chain can be rewritten by whoever can write the file, so there is no default.
        let key = match (raw.key_file, raw.key_env) {
            (Some(f), None) => crate::audit::KeySource::File(self.path(&f)),
            (None, Some(var)) if !var.is_empty() => crate::audit::KeySource::Env(var),
            (Some(_), Some(_)) => return Err(self.err("audit.key_file", "set key_file or key_env, not both")),
            (None, _) => {
                return Err(self.err(
                    "audit.key_file",
                    format!(
                        "missing: the audit chain is keyed (HMAC-SHA256); set key_file = \"/path/to/audit.key\" or \
                         key_env = \"VAR\", holding base64 of at least {} random bytes ({})",
                        crate::audit::MIN_KEY_BYTES,
                        crate::audit::KEY_HINT
                    ),
                ))
            }
        };
        let every = raw.checkpoint_every_records.unwrap_or(1000);
        if every == 0 {
            return Err(self.err("audit.checkpoint_every_records", "must be at least 1"));
        }
        let interval = raw.checkpoint_interval_secs.unwrap_or(60);
        if interval == 0 {
            return Err(self.err("audit.checkpoint_interval_secs", "must be at least 1"));
        }
        Ok(crate::audit::Settings {
            sink,
            key,
            checkpoint_every_records: every,
            checkpoint_interval: Duration::from_secs(interval),
            replica: None, // set from [fleet] once that is read
        })
    }

    fn upstream(&self, raw: Option<RawUpstream>) -> Result<UpstreamConfig, ConfigError> {
        let raw = raw.ok_or_else(|| self.err("upstream", "missing table [upstream] with url = \"http://...\""))?;
        let url = raw.url.ok_or_else(|| self.err("upstream.url", "missing; the MLflow server's base URL"))?;
        let uri: http::Uri = url.parse().map_err(|e| self.err("upstream.url", format!("{url:?} is not a URL: {e}")))?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
        let Some(authority) = uri.authority().filter(|_| scheme_ok).cloned() else {
            return Err(self.err("upstream.url", format!("{url:?} must be an http:// or https:// URL with a host")));
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(self.err("upstream.url", "must not have a path or query (MLflow is served at the root)"));
        }
        let url = http::Uri::builder()
            .scheme(uri.scheme_str().unwrap_or("http"))
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| self.err("upstream.url", e.to_string()))?;
        Ok(UpstreamConfig {
            url,
            host_header: raw.host_header.unwrap_or_else(|| authority.to_string()),
            connect_timeout: secs(raw.connect_timeout_secs, 5),
            timeout: secs(raw.timeout_secs, 120),
            service_authorization_env: raw.service_authorization_env,
            ca_file: raw.ca_file.map(|f| self.path(&f)),
        })
    }

    fn auth(&self, raw: Option<RawAuth>) -> Result<AuthConfig, ConfigError> {
        let raw = raw.ok_or_else(|| self.err("auth", "missing; add at least one [[auth.issuers]] table"))?;
        if raw.issuers.is_empty() {
            return Err(self.err("auth.issuers", "at least one [[auth.issuers]] is required"));
        }
        let issuers =
            raw.issuers.into_iter().enumerate().map(|(i, r)| self.issuer(i, r)).collect::<Result<Vec<_>, _>>()?;
        for (i, a) in issuers.iter().enumerate() {
            if issuers.iter().skip(i + 1).any(|b| b.issuer == a.issuer) {
                return Err(self.err(&format!("auth.issuers[{i}].issuer"), format!("{:?} is listed twice", a.issuer)));
            }
        }
        self.distinct_subject_prefixes(&issuers)?;
        Ok(AuthConfig {
            issuers,
            max_token_bytes: raw.max_token_bytes.unwrap_or(16 * 1024),
            leeway_secs: raw.leeway_secs.unwrap_or(30),
            jwks_cache: secs(raw.jwks_cache_secs, 300),
            jwks_min_refresh: secs(raw.jwks_min_refresh_secs, 30),
            client_certs: raw
                .client_certs
                .into_iter()
                .map(|c| ClientCertIdentity { identity: c.identity, groups: c.groups })
                .collect(),
        })
    }

    fn issuer(&self, i: usize, raw: RawIssuer) -> Result<IssuerConfig, ConfigError> {
        let key = |k: &str| format!("auth.issuers[{i}].{k}");
        let issuer = raw.issuer.filter(|s| !s.is_empty()).ok_or_else(|| self.err(&key("issuer"), "missing"))?;
        if raw.audiences.is_empty() || raw.audiences.iter().any(String::is_empty) {
            return Err(self.err(&key("audiences"), "list the accepted audiences, e.g. [\"mlflow\"]"));
        }
        if raw.algorithms.is_empty() {
            return Err(self.err(&key("algorithms"), "list the accepted algorithms, e.g. [\"RS256\"]"));
        }
        let algorithms = raw
            .algorithms
            .iter()
            .map(|a| parse_algorithm(a).ok_or_else(|| self.err(&key("algorithms"), bad_alg(a))))
            .collect::<Result<Vec<_>, _>>()?;
        let keys = match (raw.jwks_url, raw.jwks_file, raw.discovery_url) {
            (Some(u), None, None) => KeySource::JwksUrl(self.url(&key("jwks_url"), u)?),
            (None, Some(f), None) => KeySource::JwksFile(self.path(&f)),
            (None, None, Some(u)) => KeySource::Discovery(self.url(&key("discovery_url"), u)?),
            _ => {
                return Err(
                    self.err(&format!("auth.issuers[{i}]"), "set exactly one of jwks_url, jwks_file or discovery_url")
                )
            }
        };
        let groups_claim = raw.groups_claim.unwrap_or_else(|| "groups".into());
        let groups_claim: Vec<String> = groups_claim.split('.').map(str::to_owned).collect();
        if groups_claim.iter().any(String::is_empty) {
            return Err(self.err(&key("groups_claim"), "must be a dotted path such as \"realm_access.roles\""));
        }
        let fold = match raw.subject_normalization.as_deref() {
            None | Some("casefold") => true,
            Some("exact") => false,
            Some(other) => {
                return Err(
                    self.err(&key("subject_normalization"), format!("{other:?} is not \"casefold\" or \"exact\""))
                )
            }
        };
        let prefix = raw.subject_prefix.unwrap_or_else(|| if i == 0 { String::new() } else { format!("{issuer}#") });
        let subject = SubjectRule { fold, prefix };
        Ok(IssuerConfig { issuer, audiences: raw.audiences, algorithms, keys, groups_claim, subject })
    }

    /// With several issuers, a subject of one must never be an identity of another: at most one issuer leaves its
    /// subjects unqualified, and no prefix starts another (the gate also refuses an unqualified subject that starts
    /// with another issuer's prefix).
    fn distinct_subject_prefixes(&self, issuers: &[IssuerConfig]) -> Result<(), ConfigError> {
        for (i, a) in issuers.iter().enumerate() {
            for (j, b) in issuers.iter().enumerate().skip(i + 1) {
                let (p, q) = (&a.subject.prefix, &b.subject.prefix);
                // One unqualified issuer is fine: authentication refuses its subjects that start with a prefix.
                if p.is_empty() != q.is_empty() {
                    continue;
                }
                if p.starts_with(q.as_str()) || q.starts_with(p.as_str()) {
                    let what = if p.is_empty() && q.is_empty() {
                        format!("leaves its subjects unqualified, as auth.issuers[{i}] does; set a distinct subject_prefix so that the same sub from two issuers is two people")
                    } else {
                        format!("subject_prefix {q:?} and the prefix {p:?} of auth.issuers[{i}] overlap; one identity could belong to both issuers")
                    };
                    return Err(self.err(&format!("auth.issuers[{j}].subject_prefix"), what));
                }
            }
        }
        Ok(())
    }

    fn url(&self, key: &str, u: String) -> Result<String, ConfigError> {
        match u.parse::<http::Uri>() {
            Ok(uri) if matches!(uri.scheme_str(), Some("http") | Some("https")) && uri.host().is_some() => Ok(u),
            _ => Err(self.err(key, format!("{u:?} is not an http(s) URL"))),
        }
    }

    fn policy(&self, raw: Option<RawPolicy>) -> Result<PolicyConfig, ConfigError> {
        let raw = raw.ok_or_else(|| self.err("policy", "missing table [policy] with dir = \"policies\""))?;
        let dir = raw.dir.ok_or_else(|| self.err("policy.dir", "missing; the directory of *.rego files"))?;
        let entrypoint = raw.entrypoint.unwrap_or_else(|| "data.mlflow_gate.decision".into());
        if !entrypoint.starts_with("data.") {
            return Err(self.err("policy.entrypoint", "must be a rule path such as \"data.mlflow_gate.decision\""));
        }
        let engine = match raw.engine.as_deref() {
            None | Some("auto") => EngineChoice::Auto,
            Some("interpreter") => EngineChoice::Interpreter,
            Some(other) => {
                return Err(self.err("policy.engine", format!("{other:?} is not \"auto\" or \"interpreter\"")));
            }
        };
        Ok(PolicyConfig {
            engine,
            dir: self.path(&dir),
            entrypoint,
            eval_timeout: Duration::from_millis(raw.eval_timeout_ms.unwrap_or(500).max(1)),
            reload_interval: Duration::from_millis(raw.reload_interval_ms.unwrap_or(1000)),
            decision_cache_entries: raw.decision_cache_entries.unwrap_or(DEFAULT_DECISION_CACHE_ENTRIES),
        })
    }
}

impl Validator {
    fn webhook_delivery(&self, raw: RawWebhookDelivery, needed: bool) -> Result<WebhookDeliveryConfig, ConfigError> {
        let key = |k: &str| format!("webhook_delivery.{k}");
        let spool_dir = match raw.spool_dir {
            Some(d) if d.is_empty() => return Err(self.err(&key("spool_dir"), "must not be empty")),
            Some(d) => Some(self.path(&d)),
            None if needed => {
                return Err(self.err(&key("spool_dir"), "missing; [[webhooks]] need a directory for pending deliveries"))
            }
            None => None,
        };
        let max_attempts = raw.max_attempts.unwrap_or(12);
        let initial_backoff_ms = raw.initial_backoff_ms.unwrap_or(500);
        let max_backoff_ms = raw.max_backoff_ms.unwrap_or(300_000);
        let timeout_secs = raw.timeout_secs.unwrap_or(10);
        let concurrency = raw.concurrency.unwrap_or(4);
        for (k, zero) in [
            ("max_attempts", max_attempts == 0),
            ("initial_backoff_ms", initial_backoff_ms == 0),
            ("timeout_secs", timeout_secs == 0),
            ("concurrency", concurrency == 0),
        ] {
            if zero {
                return Err(self.err(&key(k), "must be greater than 0"));
            }
        }
        if max_backoff_ms < initial_backoff_ms {
            return Err(self.err(&key("max_backoff_ms"), "must be at least initial_backoff_ms"));
        }
        if concurrency > 64 {
            return Err(self.err(&key("concurrency"), "at most 64"));
        }
        Ok(WebhookDeliveryConfig {
            spool_dir,
            max_attempts,
            initial_backoff: Duration::from_millis(initial_backoff_ms),
            max_backoff: Duration::from_millis(max_backoff_ms),
            timeout: Duration::from_secs(timeout_secs),
            concurrency,
        })
    }

    fn webhook(&self, i: usize, raw: RawWebhook) -> Result<WebhookConfig, ConfigError> {
        let key = |k: &str| format!("webhooks[{i}].{k}");
        let text = raw.url.ok_or_else(|| self.err(&key("url"), "missing; the receiver's http(s) URL"))?;
        let url = self.webhook_url(&key("url"), &text)?;
        if raw.events.is_empty() {
            return Err(self.err(&key("events"), "list the events to deliver, e.g. [\"MODEL_VERSION_CREATED\"]"));
        }
        if let Some(bad) = raw.events.iter().find(|e| !crate::mlflow::events::is_known_event(e)) {
            let known = crate::mlflow::events::KNOWN_EVENTS.join(", ");
            return Err(self.err(&key("events"), format!("{bad:?} is not an event; use one of {known}")));
        }
        if raw.model_name.as_deref() == Some("") {
            return Err(self.err(&key("model_name"), "must not be empty (omit it for registry-wide)"));
        }
        for (k, var) in [("secret_env", &raw.secret_env), ("authorization_env", &raw.authorization_env)] {
            if var.as_deref().is_some_and(|v| v.is_empty() || v.contains(['=', '\0'])) {
                return Err(self.err(&key(k), "must be the name of an environment variable"));
            }
        }
        let verify_tls = raw.verify_tls.unwrap_or(true);
        if raw.ca_file.is_some() && (!verify_tls || url.scheme_str() != Some("https")) {
            return Err(self.err(&key("ca_file"), "only meaningful with an https:// url and verify_tls = true"));
        }
        Ok(WebhookConfig {
            id: webhook_id(&text, i),
            url,
            events: raw.events,
            model_name: raw.model_name,
            secret_env: raw.secret_env,
            authorization_env: raw.authorization_env,
            verify_tls,
            ca_file: raw.ca_file.map(|f| self.path(&f)),
        })
    }

    fn webhook_url(&self, key: &str, text: &str) -> Result<http::Uri, ConfigError> {
        let uri: http::Uri = text.parse().map_err(|e| self.err(key, format!("{text:?} is not a URL: {e}")))?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
        match uri.authority() {
            Some(a) if scheme_ok && !a.host().is_empty() && !a.as_str().contains('@') => Ok(uri),
            _ => Err(self.err(key, "must be an http:// or https:// URL with a host and no user:password@")),
        }
    }
}

/// The stable id of the `index`-th `[[webhooks]]` entry: first 16 hex digits of SHA-256 of `"<url>\n<index>"`.
fn webhook_id(url: &str, index: usize) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{url}\n{index}").as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn secs(v: Option<u64>, default: u64) -> Duration {
    Duration::from_secs(v.unwrap_or(default))
}

/// The asymmetric algorithms an issuer may use. HMAC is refused: a shared secret in a JWKS would let anyone
/// holding the JWKS mint tokens.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

fn bad_alg(a: &str) -> String {
    format!(
        "{a:?} is not accepted; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA (HMAC is refused)"
    )
}

/// The smallest valid configuration, for the tests of the config's sections to extend.
#[cfg(test)]
pub(crate) const TEST_BASE: &str = r#"
[upstream]
url = "http://127.0.0.1:5000"
[[auth.issuers]]
issuer = "https://idp.example"
audiences = ["mlflow"]
algorithms = ["RS256"]
jwks_file = "jwks.json"
groups_claim = "groups"
[policy]
dir = "policies"
"#;

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
