//! Authentication, repeat side: the principals of tokens already verified, so that a client sending the same
//! token again (the usual case: a token lives minutes to hours) costs a hash and a look-up instead of a signature
//! verification.
//!
//! Keyed by the SHA-256 of the whole token (never the token itself), bounded in size, an entry lives until the
//! token's `exp` or [`TTL`] after verification, whichever is first. Only successes are stored. Each entry remembers
//! the key set that verified it: once the issuer's keys change (a JWKS refresh, a rotation), an entry verified with
//! the old set is dropped and the token is verified again against the new keys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;

use super::jwks::KeySet;
use super::Principal;

/// Longest time a verified token is trusted without verifying it again.
pub const TTL: Duration = Duration::from_secs(300);
/// Most tokens remembered: about 1.5 KiB each with the cache's own overhead, so at most ~6 MiB; more distinct live
/// tokens than this only cost their verification again.
pub const CAPACITY: u64 = 4_096;

/// A token's cache key: SHA-256 of its bytes.
pub type TokenHash = [u8; 32];

/// Hashes a token for the cache.
pub fn hash(token: &str) -> TokenHash {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// One verified token.
#[derive(Clone)]
pub struct Verified {
    /// Who it authenticated.
    pub principal: Arc<Principal>,
    /// Index of its issuer in the authenticator's list.
    pub issuer: usize,
    /// The key set that verified it (compared by identity with the issuer's current set).
    pub keys: Arc<KeySet>,
    /// When it stops being trusted: min(exp, verification + TTL).
    pub until: Instant,
}

/// The verified tokens.
pub struct TokenCache {
    entries: moka::sync::Cache<TokenHash, Verified>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::new()
    }
}

impl TokenCache {
    /// An empty cache of at most [`CAPACITY`] tokens.
    pub fn new() -> TokenCache {
        TokenCache { entries: moka::sync::Cache::builder().max_capacity(CAPACITY).time_to_live(TTL).build() }
    }

    /// The entry of a token, if it is still within its lifetime.
    pub fn get(&self, key: &TokenHash) -> Option<Verified> {
        let hit = self.entries.get(key)?;
        if Instant::now() >= hit.until {
            self.entries.invalidate(key);
            return None;
        }
        Some(hit)
    }

    /// Forgets a token (its issuer's keys changed).
    pub fn forget(&self, key: &TokenHash) {
        self.entries.invalidate(key);
    }

    /// Remembers a verified token until min(`exp`, now + [`TTL`]); a token expiring now or without a numeric
    /// `exp` is not remembered.
    pub fn remember(&self, key: TokenHash, principal: Arc<Principal>, issuer: usize, keys: Arc<KeySet>) {
        let Some(left) = seconds_left(&principal.claims) else { return };
        let until = Instant::now() + left.min(TTL);
        self.entries.insert(key, Verified { principal, issuer, keys, until });
    }
}

/// Time until the claims' `exp`, if it is in the future.
fn seconds_left(claims: &serde_json::Value) -> Option<Duration> {
    let exp = claims.get("exp")?.as_f64()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64();
    (exp > now).then(|| Duration::from_secs_f64(exp - now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(exp: f64) -> Arc<Principal> {
        Arc::new(Principal {
            sub: "alice".into(),
            issuer: "https://idp".into(),
            groups: vec![],
            claims: serde_json::json!({"exp": exp}),
            via: crate::auth::Via::Bearer,
        })
    }

    fn now() -> f64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
    }

    #[test]
    fn a_token_is_kept_no_longer_than_its_expiry_or_the_ttl() {
        let cache = TokenCache::new();
        let keys = Arc::new(KeySet::default());
        cache.remember(hash("soon"), principal(now() + 60.0), 0, keys.clone());
        cache.remember(hash("later"), principal(now() + 86_400.0), 0, keys.clone());
        cache.remember(hash("expired"), principal(now() - 1.0), 0, keys);
        let soon = cache.get(&hash("soon")).map(|v| v.until.duration_since(Instant::now()));
        assert!(soon.is_some_and(|d| d <= Duration::from_secs(60)));
        let later = cache.get(&hash("later")).map(|v| v.until.duration_since(Instant::now()));
        assert!(later.is_some_and(|d| d <= TTL && d > TTL - Duration::from_secs(5)));
        assert!(cache.get(&hash("expired")).is_none(), "an expired token is never remembered");
    }

    #[test]
    fn tokens_differing_in_one_byte_have_different_keys() {
        assert_ne!(hash("a.b.c"), hash("a.b.d"));
        assert_eq!(hash("a.b.c"), hash("a.b.c"));
    }
}
