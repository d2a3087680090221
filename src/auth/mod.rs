//! Authentication, the first phase after the path is read: `Authorization: Bearer <jwt>` becomes a verified
//! [`Principal`], or the request ends with 401. Identity comes from the verified token only.

pub mod cache;
pub mod jwks;
mod token;

use std::sync::Arc;

use http::HeaderMap;
use serde::Serialize;

use crate::config::{AuthConfig, IssuerConfig};
use jwks::{Fetcher, IssuerKeys, KeySet};

pub use token::{header_segment_checks, TokenError};

/// A verified caller.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Principal {
    /// The caller's identity: the token's `sub` after its issuer's rule (`[[auth.issuers]]` `subject_prefix` and
    /// `subject_normalization`: by default folded, so `Alice` is `alice`, and qualified for every issuer but the
    /// first), or a client certificate's identity as configured. This is what the gate stamps and the policy compares.
    pub sub: String,
    /// The `iss` claim (one of the configured issuers).
    pub issuer: String,
    /// Groups from the issuer's `groups_claim`.
    pub groups: Vec<String>,
    /// Every verified claim.
    pub claims: serde_json::Value,
    /// How the caller authenticated (`input.principal.via`).
    pub via: Via,
}

/// How a caller authenticated: the same person is the same principal either way, and a policy can tell them apart.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// An `Authorization: Bearer` token.
    #[default]
    Bearer,
    /// The browser session cookie (signed in with the `[browser]` issuer).
    Session,
    /// A verified client certificate mapped in `[[auth.client_certs]]`.
    Certificate,
}

impl Via {
    /// The variant of a name the policy sees.
    pub fn parse(name: &str) -> Option<Via> {
        [Via::Bearer, Via::Session, Via::Certificate].into_iter().find(|v| v.as_str() == name)
    }

    /// The name the policy sees.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Bearer => "bearer",
            Via::Session => "session",
            Via::Certificate => "certificate",
        }
    }
}

/// Why a request is not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token is missing or invalid; the message says how (never the token itself).
    #[error("{0}")]
    Invalid(String),
    /// No keys are available to verify it (the IdP is down and nothing is cached).
    #[error("no signing keys are available for issuer {0}")]
    KeysUnavailable(String),
}

/// Verifies bearer tokens against the configured issuers.
pub struct Authenticator {
    issuers: Vec<IssuerKeys>,
    client_certs: Vec<crate::config::ClientCertIdentity>,
    max_token_bytes: usize,
    leeway_secs: u64,
    /// Tokens already verified (see `cache.rs`).
    tokens: cache::TokenCache,
}

impl Authenticator {
    /// Builds the key stores; nothing is fetched until the first token (or [`Authenticator::warm`]).
    pub fn new(config: &AuthConfig) -> Result<Authenticator, jwks::FetchError> {
        let fetcher = Fetcher::new()?;
        let issuers = config
            .issuers
            .iter()
            .map(|i| IssuerKeys::new(Arc::new(i.clone()), fetcher.clone(), config.jwks_cache, config.jwks_min_refresh))
            .collect();
        Ok(Authenticator {
            issuers,
            client_certs: config.client_certs.clone(),
            max_token_bytes: config.max_token_bytes,
            leeway_secs: config.leeway_secs,
            tokens: cache::TokenCache::new(),
        })
    }

    /// Loads every issuer's keys once, so the first request does not pay for it. Returns the issuers whose keys
    /// could not be loaded (the gate still starts: keys may become available later).
    pub async fn warm(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for issuer in &self.issuers {
            if issuer.current().await.is_none() {
                missing.push(issuer.issuer().issuer.clone());
            }
        }
        missing
    }

    /// (successful, failed) key fetches over all issuers.
    pub fn key_fetch_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.issuers
            .iter()
            .fold((0, 0), |(ok, bad), i| (ok + i.refreshes.load(Relaxed), bad + i.failures.load(Relaxed)))
    }

    /// Whether every issuer has usable keys (for readiness).
    pub fn keys_ready(&self) -> bool {
        self.issuers.iter().all(IssuerKeys::has_keys)
    }

    /// Authenticates a request from its headers, or (when it sends no bearer token) from the verified client
    /// certificate of its connection, if that identity is one the config maps to a principal.
    /// The principal is shared with the token cache (a repeated token costs no copy of its claims).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client_cert: Option<&str>,
    ) -> Result<Arc<Principal>, AuthError> {
        if !headers.contains_key(http::header::AUTHORIZATION) {
            if let Some(p) = client_cert.and_then(|id| self.certificate_principal(id)) {
                return Ok(Arc::new(p));
            }
        }
        let token = token::bearer_token(headers, self.max_token_bytes).map_err(invalid)?;
        // A token verified before, with the keys its issuer still has: the same answer, without the signature.
        let key = cache::hash(token);
        if let Some(hit) = self.tokens.get(&key) {
            if let Some(issuer) = self.issuers.get(hit.issuer) {
                match issuer.current().await {
                    Some(keys) if Arc::ptr_eq(&keys, &hit.keys) => return Ok(hit.principal),
                    _ => self.tokens.forget(&key),
                }
            }
        }
        // Boxed: a verification's future (a key fetch among its paths) is large and paid only by a new token.
        let (principal, index, keys) = Box::pin(self.verify(token, None)).await?;
        let principal = Arc::new(principal);
        self.tokens.remember(key, principal.clone(), index, keys);
        Ok(principal)
    }

    /// Verifies an OpenID Connect ID token from the sign-in issuer with the same rules as bearer tokens (the issuer's
    /// keys and algorithms, `exp`, `nbf`, `iss`, subject rule, groups), except that `aud` must be the client id.
    /// The caller checks `nonce`. ID tokens are never cached (each is used once, at the callback).
    pub async fn verify_id_token(&self, token: &str, issuer: &str, client_id: &str) -> Result<Principal, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(invalid(TokenError::TooLong(self.max_token_bytes)));
        }
        let parts = token::parse(token).map_err(invalid)?;
        if parts.issuer != issuer {
            return Err(AuthError::Invalid(format!(
                "the ID token's issuer {:?} is not the sign-in issuer",
                parts.issuer
            )));
        }
        let (principal, _, _) = self.verify(token, Some(client_id)).await?;
        Ok(Principal { via: Via::Session, ..principal })
    }

    /// Verifies a token against its issuer; `audience` replaces the issuer's audiences (ID tokens: the client id).
    /// Returns the principal with the index of its issuer and the key set that verified it (for the token cache).
    async fn verify(&self, token: &str, audience: Option<&str>) -> Result<(Principal, usize, Arc<KeySet>), AuthError> {
        let parts = token::parse(token).map_err(invalid)?;
        let (index, issuer) =
            self.issuers.iter().enumerate().find(|(_, i)| i.issuer().issuer == parts.issuer).ok_or_else(|| {
                AuthError::Invalid(format!("the token's issuer {:?} is not trusted by this gate", parts.issuer))
            })?;
        let config = issuer.issuer();
        if !config.algorithms.contains(&parts.alg) {
            return Err(AuthError::Invalid(format!(
                "the token is signed with {:?}, which issuer {} may not use",
                parts.alg, config.issuer
            )));
        }
        let mut keys = issuer.current().await.ok_or_else(|| AuthError::KeysUnavailable(config.issuer.clone()))?;
        let mut candidates = keys.candidates(parts.kid.as_deref(), parts.alg);
        if candidates.is_empty() {
            if let Some(kid) = parts.kid.as_deref().filter(|k| !keys.has_kid(k)) {
                // A key rotation may have published a new key: refetch, at most once per minimum interval.
                if issuer.force_refresh().await {
                    if let Some(fresh) = issuer.current().await {
                        candidates = fresh.candidates(Some(kid), parts.alg);
                        keys = fresh;
                    }
                }
            }
        }
        if candidates.is_empty() {
            return Err(AuthError::Invalid(format!(
                "no signing key of issuer {} matches the token (kid {:?}, alg {:?})",
                config.issuer,
                parts.kid.as_deref().unwrap_or("none"),
                parts.alg
            )));
        }
        let id_token_config;
        let config = match audience {
            Some(aud) => {
                id_token_config = IssuerConfig { audiences: vec![aud.to_string()], ..config.clone() };
                &id_token_config
            }
            None => config,
        };
        let claims = token::verify(token, &candidates, parts.alg, config, self.leeway_secs).map_err(invalid)?;
        let principal = token::principal(claims, config).map_err(invalid)?;
        self.own_identity(&principal)?;
        Ok((principal, index, keys))
    }

    /// Refuses an identity that another issuer, or a client certificate, could also produce: a subject of an
    /// unqualified issuer that starts with another issuer's `subject_prefix`, or that is a mapped certificate
    /// identity. So the same `sub` from two configured issuers is never the same person by accident.
    fn own_identity(&self, principal: &Principal) -> Result<(), AuthError> {
        let others = self.issuers.iter().map(|i| i.issuer()).filter(|i| i.issuer != principal.issuer);
        let mut prefixes = others.map(|i| i.subject.prefix.as_str()).filter(|p| !p.is_empty());
        let clash = prefixes
            .find(|p| principal.sub.starts_with(p))
            .map(|p| format!("the subjects of another issuer (subject_prefix {p:?})"))
            .or_else(|| {
                let mapped = self.client_certs.iter().any(|c| c.identity == principal.sub);
                mapped.then(|| "a client certificate identity".to_string())
            });
        match clash {
            None => Ok(()),
            Some(other) => Err(AuthError::Invalid(format!(
                "the token's subject would be the identity {:?}, which is reserved for {other}; tokens of issuer {} cannot act as another issuer's users",
                principal.sub, principal.issuer
            ))),
        }
    }
}

impl Authenticator {
    fn certificate_principal(&self, identity: &str) -> Option<Principal> {
        let mapped = self.client_certs.iter().find(|c| c.identity == identity)?;
        let claims = serde_json::json!({"sub": identity, "mtls": true, "groups": mapped.groups});
        let groups = mapped.groups.clone();
        Some(Principal { sub: identity.to_string(), issuer: "mtls".into(), groups, claims, via: Via::Certificate })
    }
}

fn invalid(e: TokenError) -> AuthError {
    AuthError::Invalid(e.to_string())
}
