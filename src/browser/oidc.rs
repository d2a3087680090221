//! Browser sign-in, the IdP side: the OpenID Connect discovery document (cached; its `issuer` must be the configured
//! one), the authorization request (code flow, PKCE S256, `state`, `nonce`) and the token request (client secret by
//! HTTP Basic, RFC 6749 section 2.3.1). Calls have a timeout and a size cap; nothing of a token is logged.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use serde::Deserialize;
use sha2::Digest;

/// Largest document accepted from the IdP.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Time allowed for one IdP call.
const TIMEOUT: Duration = Duration::from_secs(10);

/// An IdP call failed. The message names the URL and the problem, never a secret.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IdpError(pub String);

/// The endpoints of the discovery document the gate uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    /// Must equal the configured issuer.
    pub issuer: String,
    /// Where browsers sign in.
    pub authorization_endpoint: String,
    /// Where the code is exchanged.
    pub token_endpoint: String,
    /// Where sign-out ends the IdP's session (optional).
    pub end_session_endpoint: Option<String>,
}

/// The token endpoint's answer (only the ID token is used; the access token is dropped unread).
#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Talks to the sign-in issuer.
pub struct Idp {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    discovery_url: String,
    issuer: String,
    discovery: RwLock<Option<Arc<Discovery>>>,
}

impl Idp {
    /// A client for the issuer whose discovery document is at `discovery_url`.
    pub fn new(discovery_url: &str, issuer: &str) -> Result<Idp, IdpError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| IdpError(format!("cannot load system root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Idp {
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(https),
            discovery_url: discovery_url.to_string(),
            issuer: issuer.to_string(),
            discovery: RwLock::new(None),
        })
    }

    /// The discovery document, fetched once (and again after a failure).
    pub async fn discovery(&self) -> Result<Arc<Discovery>, IdpError> {
        if let Some(d) = self.discovery.read().ok().and_then(|d| d.clone()) {
            return Ok(d);
        }
        let req = http::Request::get(&self.discovery_url)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| IdpError(format!("{}: {e}", self.discovery_url)))?;
        let (status, body) = self.call(req, &self.discovery_url).await?;
        if !status.is_success() {
            return Err(IdpError(format!("{}: HTTP {status}", self.discovery_url)));
        }
        let doc: Discovery = serde_json::from_slice(&body)
            .map_err(|e| IdpError(format!("{}: not a discovery document: {e}", self.discovery_url)))?;
        if doc.issuer != self.issuer {
            return Err(IdpError(format!(
                "{}: the discovery document is for issuer {:?}, not {:?}",
                self.discovery_url, doc.issuer, self.issuer
            )));
        }
        let endpoints =
            [Some(&doc.authorization_endpoint), Some(&doc.token_endpoint), doc.end_session_endpoint.as_ref()];
        if let Some(bad) = endpoints.into_iter().flatten().find(|u| !is_http_url(u)) {
            return Err(IdpError(format!("{}: {bad:?} is not an http(s) URL", self.discovery_url)));
        }
        let doc = Arc::new(doc);
        if let Ok(mut d) = self.discovery.write() {
            *d = Some(doc.clone());
        }
        Ok(doc)
    }

    /// Exchanges an authorization code for the ID token.
    pub async fn exchange(&self, code: &str, verifier: &str, client: &ClientAuth<'_>) -> Result<String, IdpError> {
        let doc = self.discovery().await?;
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", client.redirect_uri)
                .append_pair("code_verifier", verifier);
            if client.secret.is_none() {
                form.append_pair("client_id", client.id);
            }
            form.finish()
        };
        let mut req = http::Request::post(&doc.token_endpoint)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(secret) = client.secret {
            let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", enc(client.id), enc(secret));
            req = req.header(http::header::AUTHORIZATION, format!("Basic {}", STANDARD.encode(pair)));
        }
        let req =
            req.body(Full::new(Bytes::from(form))).map_err(|e| IdpError(format!("{}: {e}", doc.token_endpoint)))?;
        let (status, body) = self.call(req, &doc.token_endpoint).await?;
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|_| IdpError(format!("{}: HTTP {status}, not a token response", doc.token_endpoint)))?;
        if let Some(error) = answer.error {
            let detail = answer.error_description.map(|d| format!(": {d}")).unwrap_or_default();
            return Err(IdpError(format!("the IdP refused the code ({error}{detail})")));
        }
        match (status.is_success(), answer.id_token) {
            (true, Some(t)) => Ok(t),
            (true, None) => Err(IdpError("the IdP's token response has no id_token".into())),
            (false, _) => Err(IdpError(format!("{}: HTTP {status}", doc.token_endpoint))),
        }
    }

    async fn call(&self, req: http::Request<Full<Bytes>>, url: &str) -> Result<(http::StatusCode, Bytes), IdpError> {
        let resp = tokio::time::timeout(TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| IdpError(format!("{url}: no answer within {TIMEOUT:?}")))?
            .map_err(|e| IdpError(format!("{url}: {e}")))?;
        let status = resp.status();
        let body = tokio::time::timeout(TIMEOUT, Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES).collect())
            .await
            .map_err(|_| IdpError(format!("{url}: body not received within {TIMEOUT:?}")))?
            .map_err(|e| IdpError(format!("{url}: {e}")))?
            .to_bytes();
        Ok((status, body))
    }
}

/// The gate as an OAuth client.
pub struct ClientAuth<'a> {
    /// `client_id`.
    pub id: &'a str,
    /// The client secret, if it is a confidential client.
    pub secret: Option<&'a str>,
    /// The registered redirect URI.
    pub redirect_uri: &'a str,
}

/// Fresh values of one sign-in: `state`, `nonce` and the PKCE verifier (32 random bytes each, base64url).
pub fn fresh_secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The PKCE S256 challenge of a verifier (RFC 7636 section 4.2).
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// The authorization request URL.
pub fn authorize_url(
    doc: &Discovery,
    client: &ClientAuth<'_>,
    scopes: &[String],
    state: &str,
    nonce: &str,
    verifier: &str,
) -> Result<String, IdpError> {
    let mut u = url::Url::parse(&doc.authorization_endpoint)
        .map_err(|e| IdpError(format!("{}: {e}", doc.authorization_endpoint)))?;
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client.id)
        .append_pair("redirect_uri", client.redirect_uri)
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", state)
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", &challenge(verifier))
        .append_pair("code_challenge_method", "S256");
    Ok(u.into())
}

/// The end-session URL (RP-initiated logout), returning to `after`.
pub fn end_session_url(doc: &Discovery, client_id: &str, after: &str) -> Option<String> {
    let mut u = url::Url::parse(doc.end_session_endpoint.as_deref()?).ok()?;
    u.query_pairs_mut().append_pair("client_id", client_id).append_pair("post_logout_redirect_uri", after);
    Some(u.into())
}

fn is_http_url(u: &str) -> bool {
    url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_matches_rfc7636_appendix_b() {
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_ne!(fresh_secret(), fresh_secret());
        assert_eq!(fresh_secret().len(), 43);
    }

    #[test]
    fn authorize_url_carries_pkce_state_and_nonce() {
        let doc = Discovery {
            issuer: "https://idp.example".into(),
            authorization_endpoint: "https://idp.example/auth?x=1".into(),
            token_endpoint: "https://idp.example/token".into(),
            end_session_endpoint: None,
        };
        let client = ClientAuth { id: "gate", secret: None, redirect_uri: "https://gate.example/gate/callback" };
        let u = authorize_url(&doc, &client, &["openid".into(), "email".into()], "st", "no", "ver").unwrap();
        let parsed = url::Url::parse(&u).unwrap();
        let q: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
        assert_eq!(q["x"], "1");
        assert_eq!(q["scope"], "openid email");
        assert_eq!((q["state"].as_str(), q["nonce"].as_str()), ("st", "no"));
        assert_eq!(q["code_challenge"], challenge("ver"));
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["redirect_uri"], "https://gate.example/gate/callback");
        assert!(end_session_url(&doc, "gate", "https://gate.example/").is_none());
    }
}
