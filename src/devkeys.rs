//! Outside the request path: a local signing key and tokens for demos and tests (`mlflow-gate dev keygen` and
//! `mlflow-gate dev token`). Production tokens come from the IdP; this only stands in for one.

use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::jwk::{CommonParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// Errors of the dev key tools.
#[derive(Debug, thiserror::Error)]
pub enum DevKeyError {
    /// Key generation or encoding failed.
    #[error("key error: {0}")]
    Key(String),
    /// Reading or writing the key directory failed.
    #[error("{0}")]
    Io(String),
}

/// A generated key pair: the private key as PKCS#8 PEM and the public key as a one-key JWKS.
pub struct DevKey {
    /// PKCS#8 PEM of the private key.
    pub private_pem: String,
    /// The public JWKS (`{"keys": [...]}`).
    pub jwks: JwkSet,
}

/// Generates an RS256 (RSA 2048) or ES256 (P-256) key with the given `kid`.
pub fn generate(alg: Algorithm, kid: &str) -> Result<DevKey, DevKeyError> {
    let der = match alg {
        Algorithm::RS256 => aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .and_then(|k| k.as_der())
            .map(|d| d.as_ref().to_vec()),
        Algorithm::ES256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|k| k.to_pkcs8v1())
            .map(|d| d.as_ref().to_vec()),
        other => return Err(DevKeyError::Key(format!("{other:?} is not supported by dev keygen; use RS256 or ES256"))),
    }
    .map_err(|e| DevKeyError::Key(e.to_string()))?;
    let private_pem = pem("PRIVATE KEY", &der);
    let encoding = encoding_key(&private_pem, alg)?;
    let mut jwk = Jwk::from_encoding_key(&encoding, alg).map_err(|e| DevKeyError::Key(e.to_string()))?;
    jwk.common = CommonParameters {
        key_id: Some(kid.to_string()),
        key_algorithm: Some(match alg {
            Algorithm::ES256 => KeyAlgorithm::ES256,
            _ => KeyAlgorithm::RS256,
        }),
        public_key_use: Some(PublicKeyUse::Signature),
        ..Default::default()
    };
    Ok(DevKey { private_pem, jwks: JwkSet { keys: vec![jwk] } })
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn encoding_key(pem: &str, alg: Algorithm) -> Result<EncodingKey, DevKeyError> {
    match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .map_err(|e| DevKeyError::Key(e.to_string()))
}

/// Writes `signing-key.pem` and `jwks.json` into `dir`.
pub fn write_dir(dir: &Path, key: &DevKey) -> Result<(), DevKeyError> {
    let io = |e: std::io::Error| DevKeyError::Io(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(dir.join("signing-key.pem"), &key.private_pem).map_err(io)?;
    let jwks = serde_json::to_string_pretty(&key.jwks).map_err(|e| DevKeyError::Key(e.to_string()))?;
    std::fs::write(dir.join("jwks.json"), jwks).map_err(io)
}

/// Signs `claims` with the key in `dir` (its `kid` and `alg` come from `dir/jwks.json`).
pub fn mint_from_dir(dir: &Path, claims: &serde_json::Value) -> Result<String, DevKeyError> {
    let io = |e: std::io::Error| DevKeyError::Io(format!("{}: {e}", dir.display()));
    let pem = std::fs::read_to_string(dir.join("signing-key.pem")).map_err(io)?;
    let jwks: JwkSet = serde_json::from_str(&std::fs::read_to_string(dir.join("jwks.json")).map_err(io)?)
        .map_err(|e| DevKeyError::Key(format!("jwks.json: {e}")))?;
    let jwk = jwks.keys.first().ok_or_else(|| DevKeyError::Key("jwks.json has no key".into()))?;
    let alg = match jwk.common.key_algorithm {
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        _ => Algorithm::RS256,
    };
    mint(&pem, alg, jwk.common.key_id.as_deref(), claims)
}

/// Signs `claims` with a PEM private key.
pub fn mint(pem: &str, alg: Algorithm, kid: Option<&str>, claims: &serde_json::Value) -> Result<String, DevKeyError> {
    let key = encoding_key(pem, alg)?;
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).map_err(|e| DevKeyError::Key(e.to_string()))
}

/// Base64url without padding, as JOSE uses it (exposed for tests that hand-craft tokens).
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_tokens_their_jwks_verifies() {
        for alg in [Algorithm::RS256, Algorithm::ES256] {
            let key = generate(alg, "k1").map_err(|e| e.to_string()).unwrap_or_else(|e| panic!("{e}"));
            let claims = serde_json::json!({"sub": "a", "exp": now_secs() + 60});
            let token = mint(&key.private_pem, alg, Some("k1"), &claims).unwrap_or_default();
            let jwk = &key.jwks.keys[0];
            let dk = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string());
            let mut v = jsonwebtoken::Validation::new(alg);
            v.required_spec_claims.clear();
            let ok =
                dk.and_then(|dk| jsonwebtoken::decode::<serde_json::Value>(&token, &dk, &v).map_err(|e| e.to_string()));
            assert!(ok.is_ok(), "{alg:?}: {ok:?}");
        }
    }
}
