//! Browser sign-in, cookie side: AES-256-GCM (aws-lc-rs) sealing of the session and login cookies with the key of
//! `[browser] cookie_key_*`, and opening with it or a retired key still in its grace period. The cookie carries
//! everything (no store), so sessions survive restarts and work across replicas sharing the key.
//!
//! Wire form: base64url(`1` || key id (4 bytes) || nonce (12) || ciphertext || tag (16)). The key id is the first
//! four bytes of SHA-256 of the key; the additional data binds the version, the key id and the cookie's purpose, so a
//! login cookie never opens as a session.

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use sha2::Digest;

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const TAG_LEN: usize = 16;
/// Bytes of a cookie key.
pub const KEY_BYTES: usize = 32;

/// What a sealed value is for; part of the additional data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The session cookie.
    Session,
    /// The short-lived login (pre-authentication) cookie.
    Login,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"mlflow-gate session",
            Purpose::Login => b"mlflow-gate login",
        }
    }
}

/// Why a cookie does not open. Never says more than that to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not base64url, too short, unknown version.
    #[error("the cookie is malformed")]
    Malformed,
    /// Sealed with a key the gate does not hold.
    #[error("the cookie was sealed with a key this gate does not accept")]
    UnknownKey,
    /// Sealed with a retired key whose grace period is over.
    #[error("the cookie was sealed with a retired key whose grace period is over")]
    RetiredKey,
    /// The tag does not verify (tampered, or another purpose).
    #[error("the cookie does not verify")]
    Tampered,
}

struct Key {
    id: [u8; KEY_ID_LEN],
    aead: RandomizedNonceKey,
    /// `None` for the current key; the end of the grace period (Unix seconds) for a retired one.
    accept_until: Option<u64>,
}

/// The current key and the retired keys still accepted. `Debug` shows key ids only.
pub struct CookieKeys {
    keys: Vec<Key>,
}

impl std::fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.keys.iter().map(|k| hex(&k.id)).collect();
        write!(f, "CookieKeys({})", ids.join(", "))
    }
}

/// A key's bytes are wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}; generate a key with `head -c 32 /dev/urandom | base64`")]
pub struct KeyError(pub String);

impl CookieKeys {
    /// From the current key and `(key, accept_until)` of retired keys, all raw bytes.
    pub fn new(current: &[u8], previous: &[(Vec<u8>, u64)]) -> Result<CookieKeys, KeyError> {
        let mut keys = vec![key(current, None)?];
        for (bytes, until) in previous {
            keys.push(key(bytes, Some(*until))?);
        }
        Ok(CookieKeys { keys })
    }

    /// Seals `plain` for `purpose` with the current key.
    pub fn seal(&self, purpose: Purpose, plain: &[u8]) -> Option<String> {
        let key = self.keys.first()?;
        let mut in_out = plain.to_vec();
        let nonce = key.aead.seal_in_place_append_tag(aad(purpose, &key.id), &mut in_out).ok()?;
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + in_out.len());
        out.push(VERSION);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&in_out);
        Some(URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a sealed value at `now` (Unix seconds). Returns the plain bytes and whether the current key sealed it
    /// (if not, the caller seals it again with the current key).
    pub fn open(&self, purpose: Purpose, sealed: &str, now: u64) -> Result<(Vec<u8>, bool), OpenError> {
        let raw = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| OpenError::Malformed)?;
        let (head, rest) = raw.split_at_checked(1 + KEY_ID_LEN).ok_or(OpenError::Malformed)?;
        let (nonce, body) = rest.split_at_checked(NONCE_LEN).ok_or(OpenError::Malformed)?;
        if head.first() != Some(&VERSION) || body.len() < TAG_LEN {
            return Err(OpenError::Malformed);
        }
        let id = head.get(1..).ok_or(OpenError::Malformed)?;
        let key = self.keys.iter().find(|k| k.id == id).ok_or(OpenError::UnknownKey)?;
        if key.accept_until.is_some_and(|until| now > until) {
            return Err(OpenError::RetiredKey);
        }
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Malformed)?;
        let mut in_out = body.to_vec();
        let plain =
            key.aead.open_in_place(nonce, aad(purpose, &key.id), &mut in_out).map_err(|_| OpenError::Tampered)?;
        Ok((plain.to_vec(), key.accept_until.is_none()))
    }
}

fn key(bytes: &[u8], accept_until: Option<u64>) -> Result<Key, KeyError> {
    if bytes.len() != KEY_BYTES {
        return Err(KeyError(format!("a cookie key must be {KEY_BYTES} bytes, this one is {}", bytes.len())));
    }
    let aead = RandomizedNonceKey::new(&AES_256_GCM, bytes).map_err(|_| KeyError("unusable AES-256 key".into()))?;
    let digest = sha2::Sha256::digest(bytes);
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(digest.get(..KEY_ID_LEN).unwrap_or(&[0; KEY_ID_LEN]));
    Ok(Key { id, aead, accept_until })
}

fn aad(purpose: Purpose, id: &[u8; KEY_ID_LEN]) -> Aad<Vec<u8>> {
    let mut a = vec![VERSION];
    a.extend_from_slice(id);
    a.extend_from_slice(purpose.label());
    Aad::from(a)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes a key from base64 text (standard or URL-safe alphabet, padding and surrounding whitespace ignored).
pub fn decode_key(text: &str) -> Result<Vec<u8>, KeyError> {
    let compact: String = text.split_whitespace().collect();
    let compact = compact.trim_end_matches('=');
    STANDARD_NO_PAD
        .decode(compact)
        .or_else(|_| URL_SAFE_NO_PAD.decode(compact))
        .map_err(|_| KeyError("a cookie key must be base64 text".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn keys(current: u8, previous: &[(u8, u64)]) -> CookieKeys {
        let prev: Vec<(Vec<u8>, u64)> = previous.iter().map(|(b, u)| (vec![*b; 32], *u)).collect();
        CookieKeys::new(&[current; 32], &prev).unwrap()
    }

    #[test]
    fn sealed_value_opens_with_the_same_key_and_purpose_only() {
        let k = keys(1, &[]);
        let sealed = k.seal(Purpose::Session, b"alice").unwrap();
        assert_eq!(k.open(Purpose::Session, &sealed, NOW), Ok((b"alice".to_vec(), true)));
        assert_eq!(k.open(Purpose::Login, &sealed, NOW), Err(OpenError::Tampered));
        assert_eq!(keys(2, &[]).open(Purpose::Session, &sealed, NOW), Err(OpenError::UnknownKey));
    }

    #[test]
    fn tampered_cookie_does_not_open() {
        let k = keys(1, &[]);
        let sealed = k.seal(Purpose::Session, b"alice").unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = raw.len() - 20;
        raw[last] ^= 1;
        assert_eq!(k.open(Purpose::Session, &URL_SAFE_NO_PAD.encode(raw), NOW), Err(OpenError::Tampered));
        assert_eq!(k.open(Purpose::Session, "not*base64", NOW), Err(OpenError::Malformed));
        assert_eq!(k.open(Purpose::Session, "AQ", NOW), Err(OpenError::Malformed));
    }

    #[test]
    fn retired_key_opens_within_its_grace_period_only() {
        let old = keys(1, &[]).seal(Purpose::Session, b"alice").unwrap();
        let rotated = keys(2, &[(1, NOW)]);
        assert_eq!(rotated.open(Purpose::Session, &old, NOW), Ok((b"alice".to_vec(), false)));
        assert_eq!(rotated.open(Purpose::Session, &old, NOW + 1), Err(OpenError::RetiredKey));
    }

    #[test]
    fn keys_must_be_32_bytes_and_debug_shows_ids_only() {
        assert!(CookieKeys::new(&[1; 16], &[]).is_err());
        assert!(!format!("{:?}", keys(1, &[])).contains("0101"));
        assert_eq!(decode_key(" AQID\n").unwrap(), vec![1, 2, 3]);
    }
}
