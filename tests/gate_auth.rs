//! Authentication at the gate: every bad token is 401 with MLflow's error JSON, and nothing reaches the upstream.

mod common;

use common::*;
use http::StatusCode;
use mlflow_gate::devkeys::{b64url, now_secs};

const PATH: &str = "/api/2.0/mlflow/experiments/search?max_results=1";

fn craft(header: serde_json::Value, payload: serde_json::Value, sig: &str) -> String {
    format!("{}.{}.{sig}", b64url(header.to_string().as_bytes()), b64url(payload.to_string().as_bytes()))
}

/// Re-signs a token's header+payload with the real key but a modified header (keeps the signature valid).
#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
fn resign_with_header(keys: &Keys, header: serde_json::Value, payload: &serde_json::Value) -> String {
    // jsonwebtoken sets only its own header fields, so sign the input manually with aws-lc.
    use aws_lc_rs::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
    let pem = keys.pem();
    let der: Vec<u8> = {
        use base64::Engine as _;
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
    };
    let kp = RsaKeyPair::from_pkcs8(&der).unwrap();
    let signing_input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(payload.to_string().as_bytes()));
    let mut sig = vec![0; kp.public_modulus_len()];
    kp.sign(&RSA_PKCS1_SHA256, &aws_lc_rs::rand::SystemRandom::new(), signing_input.as_bytes(), &mut sig).unwrap();
    format!("{signing_input}.{}", b64url(&sig))
}

async fn assert_401(gate: &GateHandle, upstream: &Recorder, token: Option<&str>, expect_in_message: &str) {
    let a = Req::get(gate.url(PATH)).maybe_token(token).send().await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "body: {:?}", a.body);
    assert_eq!(a.json()["error_code"], "UNAUTHENTICATED");
    assert!(a.message().contains(expect_in_message), "message {:?} lacks {expect_in_message:?}", a.message());
    assert!(a.headers.contains_key("x-mlflow-gate-request-id"));
    assert_eq!(upstream.count(), 0, "a rejected request reached the upstream");
}

#[tokio::test]
async fn valid_token_is_forwarded() {
    let (gate, upstream, keys) = gate_with_recorder(Behaviour::default()).await;
    let a = Req::get(gate.url(PATH)).token(&keys.token("alice", &[])).send().await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(upstream.count(), 1);
    gate.stop().await;
}

#[tokio::test]
async fn missing_or_malformed_credentials_are_401() {
    let (gate, upstream, _keys) = gate_with_recorder(Behaviour::default()).await;
    assert_401(&gate, &upstream, None, "MLFLOW_TRACKING_TOKEN").await;
    assert_401(&gate, &upstream, Some("not-a-jwt"), "well-formed JWT").await;
    assert_401(&gate, &upstream, Some("a.b.c"), "well-formed JWT").await;
    let basic = Req::get(gate.url(PATH)).header("authorization", "Basic YWxpY2U6cHc=").send().await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
    assert!(basic.message().contains("only bearer tokens"));
    assert_eq!(upstream.count(), 0);
    gate.stop().await;
}

#[tokio::test]
async fn alg_none_and_hmac_key_confusion_are_401() {
    let (gate, upstream, keys) = gate_with_recorder(Behaviour::default()).await;
    let claims = Keys::claims("mallory", &["mlflow-admin"]);
    let none = craft(serde_json::json!({"alg": "none", "typ": "JWT"}), claims.clone(), "");
    assert_401(&gate, &upstream, Some(&none), "algorithm").await;
    // HS256 signed with the RSA public key material as the secret (classic key confusion).
    let jwks = std::fs::read(keys.jwks_path()).unwrap();
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header { kid: Some("k1".into()), ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256) },
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&jwks),
    )
    .unwrap();
    assert_401(&gate, &upstream, Some(&hs), "algorithm").await;
    gate.stop().await;
}

#[tokio::test]
async fn tampered_or_foreign_signatures_are_401() {
    let (gate, upstream, keys) = gate_with_recorder(Behaviour::default()).await;
    let good = keys.token("alice", &[]);
    let mut parts: Vec<&str> = good.split('.').collect();
    let evil_payload = b64url(Keys::claims("alice", &["mlflow-admin"]).to_string().as_bytes());
    parts[1] = &evil_payload;
    assert_401(&gate, &upstream, Some(&parts.join(".")), "signature").await;
    let stripped = format!("{}.{}.", parts[0], parts[1]);
    assert_401(&gate, &upstream, Some(&stripped), "").await;
    let other = Keys::new();
    assert_401(&gate, &upstream, Some(&other.token("alice", &[])), "signature").await;
    gate.stop().await;
}

#[tokio::test]
async fn claim_violations_are_401() {
    let (gate, upstream, keys) = gate_with_recorder(Behaviour::default()).await;
    let now = now_secs();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = Keys::claims("alice", &[]);
        f(&mut c);
        keys.sign(&c)
    };
    let expired = with(&|c| c["exp"] = (now - 120).into());
    assert_401(&gate, &upstream, Some(&expired), "expired").await;
    let future = with(&|c| c["nbf"] = (now + 3600).into());
    assert_401(&gate, &upstream, Some(&future), "not valid yet").await;
    let no_exp = with(&|c| {
        c.as_object_mut().unwrap().remove("exp");
    });
    assert_401(&gate, &upstream, Some(&no_exp), "exp").await;
    let string_exp = with(&|c| c["exp"] = "9999999999".into());
    assert_401(&gate, &upstream, Some(&string_exp), "").await;
    let wrong_aud = with(&|c| c["aud"] = "other-service".into());
    assert_401(&gate, &upstream, Some(&wrong_aud), "audience").await;
    let no_aud = with(&|c| {
        c.as_object_mut().unwrap().remove("aud");
    });
    assert_401(&gate, &upstream, Some(&no_aud), "aud").await;
    let wrong_iss = with(&|c| c["iss"] = "https://evil.test".into());
    assert_401(&gate, &upstream, Some(&wrong_iss), "not trusted").await;
    let no_iss = with(&|c| {
        c.as_object_mut().unwrap().remove("iss");
    });
    assert_401(&gate, &upstream, Some(&no_iss), "issuer").await;
    let no_sub = with(&|c| {
        c.as_object_mut().unwrap().remove("sub");
    });
    assert_401(&gate, &upstream, Some(&no_sub), "sub").await;
    gate.stop().await;
}

#[tokio::test]
async fn crit_typ_kid_and_size_attacks_are_401() {
    let (gate, upstream, keys) = gate_with_recorder(Behaviour::default()).await;
    let claims = Keys::claims("alice", &[]);
    let crit = resign_with_header(
        &keys,
        serde_json::json!({"alg": "RS256", "kid": "k1", "crit": ["exp-ext"], "exp-ext": 1}),
        &claims,
    );
    assert_401(&gate, &upstream, Some(&crit), "critical").await;
    let typ = resign_with_header(&keys, serde_json::json!({"alg": "RS256", "kid": "k1", "typ": "JWE"}), &claims);
    assert_401(&gate, &upstream, Some(&typ), "type").await;
    let unknown_kid =
        resign_with_header(&keys, serde_json::json!({"alg": "RS256", "kid": "../../etc/passwd"}), &claims);
    assert_401(&gate, &upstream, Some(&unknown_kid), "no signing key").await;
    // The same header without oddities verifies: the failures above are the header checks, not the signing.
    let plain = resign_with_header(&keys, serde_json::json!({"alg": "RS256", "kid": "k1", "typ": "at+jwt"}), &claims);
    let ok = Req::get(gate.url(PATH)).token(&plain).send().await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(upstream.count(), 1);
    upstream.seen.lock().unwrap().clear();
    let mut huge = Keys::claims("alice", &[]);
    huge["padding"] = "x".repeat(20_000).into();
    assert_401(&gate, &upstream, Some(&keys.sign(&huge)), "limit").await;
    gate.stop().await;
}

#[tokio::test]
async fn es256_token_for_an_rs256_issuer_is_401() {
    let (gate, upstream, _keys) = gate_with_recorder(Behaviour::default()).await;
    let ec = mlflow_gate::devkeys::generate(jsonwebtoken::Algorithm::ES256, "k1").unwrap();
    let t = mlflow_gate::devkeys::mint(
        &ec.private_pem,
        jsonwebtoken::Algorithm::ES256,
        Some("k1"),
        &Keys::claims("a", &[]),
    )
    .unwrap();
    assert_401(&gate, &upstream, Some(&t), "ES256").await;
    gate.stop().await;
}

#[tokio::test]
async fn public_paths_need_no_token_and_drop_credentials() {
    let (gate, upstream, _keys) = gate_with_recorder(Behaviour::default()).await;
    for path in ["/health", "/version", "/api/3.0/mlflow/server-info", "/static-files/static/js/main.js"] {
        let a = Req::get(gate.url(path)).token("garbage").send().await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert!(!upstream.last().headers.contains_key("authorization"), "{path} forwarded a credential");
    }
    gate.stop().await;
}
