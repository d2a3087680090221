//! Authentication, key side: each issuer's public keys, fetched from a JWKS URL, an OpenID Connect discovery document
//! or a file, and cached with moka. One fetch at a time (moka's `try_get_with` coalesces concurrent loads), a minimum
//! interval between fetches forced by unknown `kid`s or failures, and the last good key set kept while the IdP is down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use moka::future::Cache;
use moka::Expiry;

use crate::config::{IssuerConfig, KeySource};

/// Largest JWKS or discovery document accepted.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Time allowed for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One usable verification key.
#[derive(Clone)]
pub struct VerifyKey {
    /// The key itself.
    pub key: Arc<DecodingKey>,
    /// Algorithms this key may verify: the JWK's own `alg` when it has one, else the issuer's allowed algorithms
    /// of the key's family.
    pub algorithms: Vec<Algorithm>,
}

/// An issuer's keys, by `kid` (keys without a `kid` are kept apart).
#[derive(Clone, Default)]
pub struct KeySet {
    by_kid: HashMap<String, VerifyKey>,
    without_kid: Vec<VerifyKey>,
}

impl KeySet {
    /// Keys that may verify a token with this `kid` and algorithm.
    pub fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<VerifyKey> {
        let usable = |k: &&VerifyKey| k.algorithms.contains(&alg);
        match kid {
            Some(kid) => self.by_kid.get(kid).filter(usable).cloned().into_iter().collect(),
            None => self.by_kid.values().chain(self.without_kid.iter()).filter(usable).cloned().collect(),
        }
    }

    /// Whether a key with this `kid` is present.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.without_kid.len()
    }

    /// Whether there are no usable keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Builds the usable keys of a JWKS for an issuer, skipping (and reporting) keys it must not use: symmetric
    /// (`oct`) keys, encryption keys, keys whose `alg` the issuer does not allow.
    pub fn from_jwks(jwks: &JwkSet, allowed: &[Algorithm]) -> (KeySet, Vec<String>) {
        let mut set = KeySet::default();
        let mut skipped = Vec::new();
        for jwk in &jwks.keys {
            let label = jwk.common.key_id.clone().unwrap_or_else(|| "(no kid)".into());
            match usable_key(jwk, allowed) {
                Ok(vk) => match &jwk.common.key_id {
                    Some(kid) => {
                        set.by_kid.insert(kid.clone(), vk);
                    }
                    None => set.without_kid.push(vk),
                },
                Err(why) => skipped.push(format!("{label}: {why}")),
            }
        }
        (set, skipped)
    }
}

fn usable_key(jwk: &Jwk, allowed: &[Algorithm]) -> Result<VerifyKey, String> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (use=enc)".into());
    }
    let family_algs: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(_) => &[Algorithm::ES256, Algorithm::ES384],
        AlgorithmParameters::OctetKeyPair(_) => &[Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => return Err("a symmetric (oct) key, never accepted from a JWKS".into()),
        _ => return Err("an unsupported key type".into()),
    };
    let algorithms: Vec<Algorithm> = match jwk.common.key_algorithm {
        Some(ka) => {
            let alg = key_algorithm(ka).ok_or("its alg is not a signature algorithm")?;
            if !family_algs.contains(&alg) {
                return Err("its alg does not match its key type".into());
            }
            vec![alg]
        }
        None => family_algs.to_vec(),
    };
    let algorithms: Vec<Algorithm> = algorithms.into_iter().filter(|a| allowed.contains(a)).collect();
    if algorithms.is_empty() {
        return Err("its algorithm is not in this issuer's allowed algorithms".into());
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unreadable key: {e}"))?;
    Ok(VerifyKey { key: Arc::new(key), algorithms })
}

fn key_algorithm(ka: KeyAlgorithm) -> Option<Algorithm> {
    Some(match ka {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Network, status or size problem.
    #[error("{0}")]
    Transport(String),
    /// The document is not what it should be.
    #[error("{0}")]
    Document(String),
}

type HttpsClient =
    Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Empty<Bytes>>;

/// Fetches documents over http(s) with a timeout and a size cap.
#[derive(Clone)]
pub struct Fetcher {
    client: HttpsClient,
}

impl Fetcher {
    /// A fetcher trusting the system's root certificates.
    pub fn new() -> Result<Fetcher, FetchError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| FetchError::Transport(format!("cannot load system root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Ok(Fetcher { client })
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value, FetchError> {
        let uri: http::Uri = url.parse().map_err(|e| FetchError::Transport(format!("bad URL {url}: {e}")))?;
        let req = http::Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        let resp = tokio::time::timeout(FETCH_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| FetchError::Transport(format!("{url}: no answer within {FETCH_TIMEOUT:?}")))?
            .map_err(|e| FetchError::Transport(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(FetchError::Transport(format!("{url}: HTTP {}", resp.status())));
        }
        let body = tokio::time::timeout(FETCH_TIMEOUT, Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES).collect())
            .await
            .map_err(|_| FetchError::Transport(format!("{url}: body not received within {FETCH_TIMEOUT:?}")))?
            .map_err(|e| FetchError::Transport(format!("{url}: {e}")))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| FetchError::Document(format!("{url}: not JSON: {e}")))
    }
}

/// A cached key set, marked stale when it is the last good set served while fetching fails.
#[derive(Clone)]
struct Cached {
    keys: Arc<KeySet>,
    stale: bool,
}

struct CacheExpiry {
    fresh: Duration,
    stale: Duration,
}

impl Expiry<(), Cached> for CacheExpiry {
    fn expire_after_create(&self, _: &(), value: &Cached, _: Instant) -> Option<Duration> {
        Some(if value.stale { self.stale } else { self.fresh })
    }
}

/// How long [`IssuerKeys::current`] answers from its snapshot before it asks the cache again: short against any
/// key cache lifetime, long against the time between two requests.
const SNAPSHOT_LIFETIME: Duration = Duration::from_millis(250);

/// The keys of one issuer.
pub struct IssuerKeys {
    config: Arc<IssuerConfig>,
    fetcher: Fetcher,
    cache: Cache<(), Cached>,
    /// The keys the cache last gave and until when to give them again without asking it: every request with a
    /// cached token asks for the current keys, and the cache's look-up (a future, its clock and its housekeeping)
    /// cost more than the rest of a cached token's check. Dropped when a refresh is forced.
    snapshot: RwLock<Option<(Arc<KeySet>, Instant)>>,
    last_good: RwLock<Option<Arc<KeySet>>>,
    last_forced: Mutex<Option<Instant>>,
    last_failure: Mutex<Option<Instant>>,
    min_refresh: Duration,
    jwks_uri: RwLock<Option<String>>,
    /// Successful key fetches.
    pub refreshes: std::sync::atomic::AtomicU64,
    /// Failed key fetches.
    pub failures: std::sync::atomic::AtomicU64,
}

impl IssuerKeys {
    /// Keys for an issuer, cached for `ttl`, refetched at most every `min_refresh` when forced.
    pub fn new(config: Arc<IssuerConfig>, fetcher: Fetcher, ttl: Duration, min_refresh: Duration) -> IssuerKeys {
        let cache =
            Cache::builder().max_capacity(1).expire_after(CacheExpiry { fresh: ttl, stale: min_refresh }).build();
        IssuerKeys {
            config,
            fetcher,
            cache,
            snapshot: RwLock::new(None),
            last_good: RwLock::new(None),
            last_forced: Mutex::new(None),
            last_failure: Mutex::new(None),
            min_refresh,
            jwks_uri: RwLock::new(None),
            refreshes: Default::default(),
            failures: Default::default(),
        }
    }

    /// The issuer this key store serves.
    pub fn issuer(&self) -> &IssuerConfig {
        &self.config
    }

    /// The current keys: cached, freshly loaded, or (when loading fails) the last good set. `None` when no keys
    /// have ever been loaded and loading fails now.
    pub async fn current(&self) -> Option<Arc<KeySet>> {
        if let Some((keys, until)) = self.snapshot.read().ok().and_then(|s| s.clone()) {
            if Instant::now() < until {
                return Some(keys);
            }
        }
        // Boxed: the cache's futures are large, and this runs for every request with a cached token.
        Box::pin(self.current_from_cache()).await
    }

    async fn current_from_cache(&self) -> Option<Arc<KeySet>> {
        if self.recently_failed() && self.cache.get(&()).await.is_none() {
            return self.last_good();
        }
        match self.cache.try_get_with((), self.load()).await {
            Ok(cached) => {
                if let Ok(mut snapshot) = self.snapshot.write() {
                    *snapshot = Some((cached.keys.clone(), Instant::now() + SNAPSHOT_LIFETIME));
                }
                Some(cached.keys)
            }
            Err(e) => {
                tracing::warn!(issuer = %self.config.issuer, error = %e, "loading the issuer's keys failed");
                self.last_good()
            }
        }
    }

    /// Drops the cached keys so that the next [`IssuerKeys::current`] fetches again, unless that was done less
    /// than the minimum refresh interval ago. Returns whether a refetch will happen.
    pub async fn force_refresh(&self) -> bool {
        {
            let Ok(mut last) = self.last_forced.lock() else {
                return false;
            };
            if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
                return false;
            }
            *last = Some(Instant::now());
        }
        if let Ok(mut snapshot) = self.snapshot.write() {
            *snapshot = None;
        }
        self.cache.invalidate(&()).await;
        true
    }

    /// Whether usable keys are held (without fetching).
    pub fn has_keys(&self) -> bool {
        self.last_good().is_some()
    }

    fn last_good(&self) -> Option<Arc<KeySet>> {
        self.last_good.read().ok().and_then(|g| g.clone())
    }

    fn recently_failed(&self) -> bool {
        self.last_failure.lock().ok().and_then(|t| *t).is_some_and(|t| t.elapsed() < self.min_refresh)
    }

    async fn load(&self) -> Result<Cached, Arc<FetchError>> {
        match self.fetch().await {
            Ok(keys) => {
                self.refreshes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let keys = Arc::new(keys);
                if let Ok(mut g) = self.last_good.write() {
                    *g = Some(keys.clone());
                }
                if let Ok(mut f) = self.last_failure.lock() {
                    *f = None;
                }
                tracing::info!(issuer = %self.config.issuer, keys = keys.len(), "loaded the issuer's signing keys");
                Ok(Cached { keys, stale: false })
            }
            Err(e) => {
                self.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Ok(mut f) = self.last_failure.lock() {
                    *f = Some(Instant::now());
                }
                match self.last_good() {
                    Some(keys) => {
                        tracing::warn!(issuer = %self.config.issuer, error = %e, "key refresh failed; keeping the last good keys");
                        Ok(Cached { keys, stale: true })
                    }
                    None => Err(Arc::new(e)),
                }
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, FetchError> {
        let doc = match &self.config.keys {
            KeySource::JwksFile(path) => {
                let text = tokio::fs::read(path)
                    .await
                    .map_err(|e| FetchError::Transport(format!("{}: {e}", path.display())))?;
                serde_json::from_slice(&text)
                    .map_err(|e| FetchError::Document(format!("{}: not JSON: {e}", path.display())))?
            }
            KeySource::JwksUrl(url) => self.fetcher.get_json(url).await?,
            KeySource::Discovery(url) => {
                let jwks_uri = self.discover(url).await?;
                self.fetcher.get_json(&jwks_uri).await?
            }
        };
        let jwks: JwkSet =
            serde_json::from_value(doc).map_err(|e| FetchError::Document(format!("not a JWKS document: {e}")))?;
        let (set, skipped) = KeySet::from_jwks(&jwks, &self.config.algorithms);
        for why in skipped {
            tracing::warn!(issuer = %self.config.issuer, key = %why, "ignoring a key of the issuer's JWKS");
        }
        if set.is_empty() {
            return Err(FetchError::Document("the JWKS holds no usable signing key".into()));
        }
        Ok(set)
    }

    /// Reads `jwks_uri` from the discovery document once; the document's `issuer` must be the configured one
    /// (OpenID Connect Discovery 1.0, section 4.3).
    async fn discover(&self, url: &str) -> Result<String, FetchError> {
        if let Some(uri) = self.jwks_uri.read().ok().and_then(|u| u.clone()) {
            return Ok(uri);
        }
        let doc = self.fetcher.get_json(url).await?;
        let issuer = doc.get("issuer").and_then(|v| v.as_str()).unwrap_or_default();
        if issuer != self.config.issuer {
            return Err(FetchError::Document(format!(
                "{url}: the discovery document is for issuer {issuer:?}, not {:?}",
                self.config.issuer
            )));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .ok_or_else(|| FetchError::Document(format!("{url}: no http(s) jwks_uri in the discovery document")))?
            .to_string();
        if let Ok(mut u) = self.jwks_uri.write() {
            *u = Some(jwks_uri.clone());
        }
        Ok(jwks_uri)
    }
}
