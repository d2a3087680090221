//! Authentication, token side: extracting the bearer token, checking its header before any key is touched
//! (size, `alg`, `crit`, `typ`), and verifying signature and claims with jsonwebtoken, per RFC 8725.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{header, HeaderMap};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};

use super::jwks::VerifyKey;
use super::Principal;
use crate::config::{parse_algorithm, IssuerConfig};

/// What is wrong with a token, phrased for the person holding it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    /// No Authorization header.
    #[error(
        "authentication required: send 'Authorization: Bearer <token>' (MLflow clients: set MLFLOW_TRACKING_TOKEN)"
    )]
    Missing,
    /// Basic credentials, or another scheme.
    #[error("only bearer tokens are accepted (MLflow clients: unset MLFLOW_TRACKING_USERNAME/PASSWORD and set MLFLOW_TRACKING_TOKEN)")]
    NotBearer,
    /// The header cannot be read.
    #[error("malformed Authorization header")]
    Malformed,
    /// Too long.
    #[error("the bearer token is longer than the {0}-byte limit")]
    TooLong(usize),
    /// Not three base64url segments with JSON header and payload.
    #[error("the bearer token is not a well-formed JWT")]
    NotJwt,
    /// `alg` missing, `none`, or not a supported asymmetric algorithm.
    #[error("the token's algorithm {0:?} is not accepted")]
    BadAlgorithm(String),
    /// `crit` names extensions the gate does not understand (RFC 7515 section 4.1.11).
    #[error("the token has critical header extensions this gate does not support")]
    Critical,
    /// `typ` is not a JWT type.
    #[error("the token's type {0:?} is not a JWT access token")]
    BadType(String),
    /// The payload has no `iss`.
    #[error("the token has no issuer (iss)")]
    NoIssuer,
    /// Signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// Past `exp`.
    #[error("the token has expired; get a new one")]
    Expired,
    /// Before `nbf`.
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    /// Wrong audience.
    #[error("the token's audience is not one this gate accepts ({0})")]
    BadAudience(String),
    /// A required claim is absent.
    #[error("the token lacks the required claim {0:?}")]
    MissingClaim(String),
    /// Anything else jsonwebtoken rejects.
    #[error("the token is invalid ({0})")]
    Invalid(String),
}

/// The parts of a token read before verification, used only to pick the issuer and the key.
#[derive(Debug)]
pub struct Parts {
    /// The header's algorithm.
    pub alg: Algorithm,
    /// The header's key id.
    pub kid: Option<String>,
    /// The (unverified) `iss` claim.
    pub issuer: String,
}

/// Extracts the token from the single `Authorization: Bearer` header.
pub fn bearer_token(headers: &HeaderMap, max_bytes: usize) -> Result<&str, TokenError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(TokenError::Missing)?;
    if values.next().is_some() {
        return Err(TokenError::Malformed);
    }
    if value.len() > max_bytes + 7 {
        return Err(TokenError::TooLong(max_bytes));
    }
    let value = value.to_str().map_err(|_| TokenError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::NotBearer);
    }
    let token = token.trim_matches(' ');
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token.len() > max_bytes {
        return Err(TokenError::TooLong(max_bytes));
    }
    Ok(token)
}

/// Checks a JOSE header object: `crit` refused, `typ` (when present) must be a JWT type, `alg` must be a supported
/// asymmetric algorithm. Returns the algorithm.
pub fn header_segment_checks(header: &serde_json::Value) -> Result<Algorithm, TokenError> {
    let obj = header.as_object().ok_or(TokenError::NotJwt)?;
    if obj.contains_key("crit") {
        return Err(TokenError::Critical);
    }
    if let Some(typ) = obj.get("typ") {
        let typ = typ.as_str().unwrap_or_default();
        let bare = typ.strip_prefix("application/").unwrap_or(typ);
        if !bare.eq_ignore_ascii_case("jwt") && !bare.eq_ignore_ascii_case("at+jwt") {
            return Err(TokenError::BadType(typ.to_string()));
        }
    }
    let alg = obj.get("alg").and_then(|a| a.as_str()).unwrap_or("(missing)");
    parse_algorithm(alg).ok_or_else(|| TokenError::BadAlgorithm(alg.to_string()))
}

/// Reads header and payload without verifying anything, to choose issuer and key.
pub fn parse(token: &str) -> Result<Parts, TokenError> {
    let mut segments = token.split('.');
    let (Some(h), Some(p), Some(_sig), None) = (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return Err(TokenError::NotJwt);
    };
    let header = decode_segment(h)?;
    let alg = header_segment_checks(&header)?;
    let kid = match header.get("kid") {
        None => None,
        Some(serde_json::Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(TokenError::NotJwt),
    };
    let payload = decode_segment(p)?;
    let issuer = payload.get("iss").and_then(|i| i.as_str()).ok_or(TokenError::NoIssuer)?;
    Ok(Parts { alg, kid, issuer: issuer.to_string() })
}

fn decode_segment(segment: &str) -> Result<serde_json::Value, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| TokenError::NotJwt)?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| TokenError::NotJwt)?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(TokenError::NotJwt)
    }
}

/// Verifies the signature with each candidate key until one matches, and the claims: `exp`, `iss`, `aud` and
/// `sub` required, `nbf` checked, the algorithm pinned to the header's (already checked against the issuer's list
/// and the key's own `alg`).
pub fn verify(
    token: &str,
    keys: &[VerifyKey],
    alg: Algorithm,
    issuer: &IssuerConfig,
    leeway_secs: u64,
) -> Result<serde_json::Value, TokenError> {
    let mut validation = Validation::new(alg);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.set_issuer(&[issuer.issuer.as_str()]);
    validation.set_audience(&issuer.audiences);
    validation.validate_nbf = true;
    validation.leeway = leeway_secs;
    let mut last = TokenError::BadSignature;
    for key in keys {
        match jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => {
                last = map_error(e.kind(), issuer);
                if last != TokenError::BadSignature {
                    return Err(last);
                }
            }
        }
    }
    Err(last)
}

fn map_error(kind: &ErrorKind, issuer: &IssuerConfig) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::BadAudience(issuer.audiences.join(", ")),
        ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
        ErrorKind::InvalidIssuer => TokenError::Invalid("issuer mismatch".into()),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::BadAlgorithm("mismatch".into()),
        other => TokenError::Invalid(format!("{other:?}")),
    }
}

/// Turns verified claims into a principal. `sub` must be a non-empty string; the principal's identity is the
/// issuer's rule applied to it (prefix, folding); `claims.sub` keeps the token's own spelling. Groups are read from
/// the issuer's `groups_claim` path (a list of strings, or one string).
pub fn principal(claims: serde_json::Value, issuer: &IssuerConfig) -> Result<Principal, TokenError> {
    let sub = claims
        .get("sub")
        .and_then(|s| s.as_str())
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| TokenError::MissingClaim("sub".into()))?;
    let sub = issuer.subject.identity(sub);
    let mut node = Some(&claims);
    for part in &issuer.groups_claim {
        node = node.and_then(|n| n.get(part));
    }
    let groups = match node {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(|g| g.as_str().map(str::to_owned)).collect(),
        Some(serde_json::Value::String(g)) => vec![g.clone()],
        _ => Vec::new(),
    };
    Ok(Principal { sub, issuer: issuer.issuer.clone(), groups, claims, via: super::Via::Bearer })
}
