//! Identity is (issuer, subject), compared after each issuer's normalisation: the same `sub` from two configured
//! issuers is two people, and `Alice` from one issuer is `alice`. Checked on what the gate forwards (the run's
//! `user_id` and `mlflow.user` tag it stamps) to a recording upstream.

mod common;

use common::{config_toml, policies_dir, Behaviour, GateHandle, Keys, Recorder, Req, AUDIENCE};
use http::StatusCode;

const SECOND_ISSUER: &str = "https://ci-idp.test";

struct Setup {
    gate: GateHandle,
    upstream: Recorder,
    first: Keys,
    second: Keys,
}

async fn two_issuers() -> Setup {
    let upstream = Recorder::start(Behaviour::default()).await;
    let (first, second) = (Keys::new(), Keys::new());
    let toml = config_toml(upstream.addr, &first.jwks_path(), &policies_dir(), "").replace(
        "[policy]",
        &format!(
            "[[auth.issuers]]\nissuer = \"{SECOND_ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"RS256\"]\njwks_file = \"{}\"\n\n[policy]",
            second.jwks_path().display()
        ),
    );
    Setup { gate: GateHandle::start_toml(&toml).await, upstream, first, second }
}

fn second_token(keys: &Keys, sub: &str) -> String {
    let mut claims = Keys::claims(sub, &[]);
    claims["iss"] = SECOND_ISSUER.into();
    keys.sign(&claims)
}

/// Creates a run as `token` and returns the `user_id` the gate forwarded.
#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
async fn run_user(s: &Setup, token: &str) -> String {
    let answer = Req::post(s.gate.url("/api/2.0/mlflow/runs/create"))
        .token(token)
        .json(r#"{"experiment_id": "1", "user_id": "someone"}"#)
        .send()
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.message());
    let body: serde_json::Value =
        serde_json::from_slice(&s.upstream.last_to("/api/2.0/mlflow/runs/create").body).unwrap();
    let tag = body["tags"].as_array().unwrap().iter().find(|t| t["key"] == "mlflow.user").unwrap()["value"].clone();
    assert_eq!(body["user_id"], tag);
    body["user_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_same_subject_from_two_issuers_is_two_people() {
    let s = two_issuers().await;
    assert_eq!(run_user(&s, &s.first.token("alice", &[])).await, "alice");
    assert_eq!(run_user(&s, &second_token(&s.second, "alice")).await, "https://ci-idp.test#alice");
    // Folded per issuer: `Alice` and a full-width `ａｌｉｃｅ` are alice.
    assert_eq!(run_user(&s, &s.first.token("Alice", &[])).await, "alice");
    assert_eq!(run_user(&s, &s.first.token("ａｌｉｃｅ", &[])).await, "alice");
    assert_eq!(run_user(&s, &second_token(&s.second, "ALICE")).await, "https://ci-idp.test#alice");
    s.gate.stop().await;
}

#[tokio::test]
async fn a_subject_that_imitates_another_issuers_identity_is_refused() {
    let s = two_issuers().await;
    let before = s.upstream.count();
    let imitation = s.first.token("https://ci-idp.test#alice", &[]);
    let answer = Req::post(s.gate.url("/api/2.0/mlflow/runs/create"))
        .token(&imitation)
        .json(r#"{"experiment_id": "1"}"#)
        .send()
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.message());
    assert!(answer.message().contains("cannot act as another issuer's users"), "{}", answer.message());
    assert_eq!(s.upstream.count(), before, "nothing reached the upstream");
    s.gate.stop().await;
}
