//! Browser sign-in at the gate, in front of the recording upstream: the session cookie is the principal (and never
//! reaches MLflow); a tampered, expired, idle or retired-key cookie is 401 with nothing forwarded; a cookie-
//! authenticated change from another origin is 403; page navigations are sent to sign in while API calls get 401;
//! the callback refuses a replayed `state`, a wrong `nonce` and a wrong audience. The IdP here is the scripted one
//! (it can mint the wrong tokens a real IdP never would); the real-IdP flow is in tests/e2e/test_browser_signin.py.

mod common;
#[path = "browser/scripted_idp.rs"]
mod scripted_idp;

use common::*;
use http::StatusCode;
use mlflow_gate::browser::seal::{CookieKeys, Purpose};
use mlflow_gate::browser::session::SessionData;
use mlflow_gate::devkeys::now_secs;
use scripted_idp::{Script, ScriptedIdp, CLIENT_SECRET};

const SEARCH: &str = "/ajax-api/2.0/mlflow/experiments/search?max_results=1";
const CREATE: &str = "/ajax-api/2.0/mlflow/experiments/create";
const ORIGIN: &str = "http://gate.test";
const KEY: [u8; 32] = [7; 32];
const OLD_KEY: [u8; 32] = [9; 32];
const COOKIE: &str = "mlflow-gate-session";

struct Setup {
    gate: GateHandle,
    upstream: Recorder,
    idp: ScriptedIdp,
    keys: Keys,
}

/// A gate with `[browser]` (cookie key in a file, a retired key accepted until `old_key_until`) in front of the
/// recording upstream, signing in with the scripted IdP.
async fn setup(old_key_until: &str) -> Setup {
    setup_with(old_key_until, &policies_dir()).await
}

/// [`setup`] with another policy directory.
#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
async fn setup_with(old_key_until: &str, policies: &std::path::Path) -> Setup {
    use base64::Engine as _;
    let upstream = Recorder::start(Behaviour::default()).await;
    let keys = Keys::new();
    let idp = ScriptedIdp::start(ISSUER, keys.pem()).await;
    let dir = keys.dir.path();
    let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
    std::fs::write(dir.join("cookie.key"), b64(&KEY)).unwrap();
    std::fs::write(dir.join("old-cookie.key"), b64(&OLD_KEY)).unwrap();
    std::fs::write(dir.join("client.secret"), CLIENT_SECRET).unwrap();
    let mut toml = config_toml(upstream.addr, &keys.jwks_path(), policies, "");
    toml = toml.replace("algorithms = [\"RS256\"]", "algorithms = [\"RS256\"]\ngroups_claim = \"groups\"");
    toml.push_str(&format!(
        r#"
[browser]
issuer = "{ISSUER}"
discovery_url = "{discovery}"
client_id = "mlflow-gate"
client_secret_file = "{dir}/client.secret"
redirect_url = "{ORIGIN}/gate/callback"
public_origins = ["{ORIGIN}"]
cookie_key_file = "{dir}/cookie.key"
session_idle_secs = 600
session_absolute_secs = 3600
[[browser.previous_cookie_keys]]
key_file = "{dir}/old-cookie.key"
accept_until = {old_key_until}
"#,
        discovery = idp.discovery_url(),
        dir = dir.display(),
    ));
    let gate = GateHandle::start_toml(&toml).await;
    Setup { gate, upstream, idp, keys }
}

#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
fn session(key: &[u8; 32], signed_in: u64, seen: u64) -> String {
    let data = SessionData {
        sub: "alice".into(),
        iss: ISSUER.into(),
        groups: vec!["engineers".into()],
        claims: serde_json::json!({"sub": "alice"}),
        signed_in,
        seen,
    };
    let keys = CookieKeys::new(key, &[]).unwrap();
    keys.seal(Purpose::Session, &serde_json::to_vec(&data).unwrap()).unwrap()
}

fn cookie(value: &str) -> String {
    format!("other=1; {COOKIE}={value}")
}

#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
fn set_cookies(a: &Answer) -> Vec<String> {
    a.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn session_cookie_is_the_principal_and_never_reaches_mlflow() {
    let s = setup("2099-01-01T00:00:00Z").await;
    let now = now_secs();
    let a = Req::get(s.gate.url(SEARCH)).header("cookie", &cookie(&session(&KEY, now - 5, now - 5))).send().await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.message());
    let seen = s.upstream.last();
    assert_eq!(seen.headers.get("cookie").unwrap(), "other=1");
    assert!(seen.headers.get("authorization").is_none());
    let me = Req::get(s.gate.url("/gate/me")).header("cookie", &cookie(&session(&KEY, now, now))).send().await;
    assert_eq!(me.json()["via"], "session");
    assert_eq!(me.json()["sub"], "alice");
    let bearer = Req::get(s.gate.url("/gate/me")).token(&s.keys.token("Alice", &["engineers"])).send().await;
    assert_eq!(
        (bearer.json()["sub"].clone(), bearer.json()["via"].clone()),
        (me.json()["sub"].clone(), "bearer".into())
    );
}

#[tokio::test]
async fn tampered_expired_idle_and_retired_key_cookies_are_401_and_nothing_is_forwarded() {
    let s = setup("2020-01-01T00:00:00Z").await;
    let now = now_secs();
    let good = session(&KEY, now, now);
    let mut tampered = good.clone().into_bytes();
    let i = tampered.len() - 10;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let cases = [
        (String::from_utf8(tampered).unwrap(), "does not verify"),
        (session(&KEY, now - 3600, now - 10), "maximum lifetime"),
        (session(&KEY, now - 700, now - 600), "inactivity"),
        (session(&OLD_KEY, now, now), "retired key"),
        (session(&[3; 32], now, now), "does not accept"),
    ];
    for (value, why) in cases {
        let a = Req::get(s.gate.url(SEARCH)).header("cookie", &cookie(&value)).send().await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{why}");
        assert_eq!(a.json()["error_code"], "UNAUTHENTICATED");
        assert!(a.message().contains(why), "{why}: {}", a.message());
    }
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn retired_key_within_its_grace_period_is_accepted_and_resealed() {
    let s = setup("2099-01-01T00:00:00Z").await;
    let now = now_secs();
    let a = Req::get(s.gate.url(SEARCH)).header("cookie", &cookie(&session(&OLD_KEY, now, now))).send().await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.message());
    let fresh = set_cookies(&a).into_iter().find(|c| c.starts_with(&format!("{COOKIE}="))).unwrap();
    let value = fresh.split(';').next().unwrap().split_once('=').unwrap().1.to_string();
    let current = CookieKeys::new(&KEY, &[]).unwrap();
    assert!(current.open(Purpose::Session, &value, now).is_ok(), "re-sealed with the current key");
}

#[tokio::test]
async fn cross_origin_change_with_the_session_cookie_is_403_and_mlflow_unchanged() {
    let s = setup("2099-01-01T00:00:00Z").await;
    let now = now_secs();
    let c = cookie(&session(&KEY, now, now));
    let body = r#"{"name":"csrf"}"#;
    for origin in [Some("http://evil.example"), Some("null"), None] {
        let mut req = Req::post(s.gate.url(CREATE)).header("cookie", &c).json(body);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let a = req.send().await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{origin:?}");
        assert_eq!(a.json()["error_code"], "PERMISSION_DENIED");
        assert!(a.message().contains("Origin") || a.message().contains("origin"), "{}", a.message());
    }
    let evil_referer = Req::post(s.gate.url(CREATE)).header("cookie", &c).header("referer", "http://evil.example/x");
    assert_eq!(evil_referer.json(body).send().await.status, StatusCode::FORBIDDEN);
    assert_eq!(s.upstream.count(), 0, "nothing reached MLflow");
    let same = Req::post(s.gate.url(CREATE)).header("cookie", &c).header("origin", ORIGIN).json(body).send().await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.message());
    let bearer = Req::post(s.gate.url(CREATE)).token(&s.keys.token("alice", &[])).json(r#"{"name":"b"}"#).send().await;
    assert_eq!(bearer.status, StatusCode::OK, "bearer requests need no Origin: {}", bearer.message());
    assert_eq!(s.upstream.hits("/ajax-api/2.0/mlflow/experiments/create"), 2);
}

#[tokio::test]
async fn page_navigation_is_sent_to_sign_in_and_api_calls_get_401() {
    let s = setup("2099-01-01T00:00:00Z").await;
    let html = [("accept", "text/html,application/xhtml+xml,*/*;q=0.8")];
    let page = Req::get(s.gate.url("/")).headers(&html).send().await;
    assert_eq!(page.status, StatusCode::FOUND);
    let location = page.headers["location"].to_str().unwrap();
    assert!(location.starts_with(&format!("http://{}/authorize?", s.idp.addr)), "{location}");
    let q: std::collections::HashMap<String, String> =
        url::Url::parse(location).unwrap().query_pairs().into_owned().collect();
    assert_eq!((q["code_challenge_method"].as_str(), q["client_id"].as_str()), ("S256", "mlflow-gate"));
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 43 && q["code_challenge"].len() == 43);
    let login = set_cookies(&page).concat();
    assert!(login.contains("mlflow-gate-login=") && login.contains("HttpOnly") && login.contains("SameSite=Lax"));
    let api = Req::get(s.gate.url(SEARCH)).headers(&html).send().await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.json()["error_code"], "UNAUTHENTICATED");
    let script = Req::get(s.gate.url("/static-files/static/js/main.js")).header("accept", "*/*").send().await;
    assert_ne!(script.status, StatusCode::FOUND, "assets are not navigations");
    assert_eq!(s.upstream.hits("/"), 0, "the page was not fetched for a browser without a session");
}

/// Follows a sign-in through the scripted IdP: /gate/login -> IdP -> the callback URL (not yet called).
#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
async fn start_sign_in(s: &Setup, return_to: &str) -> (String, String) {
    let login = Req::get(s.gate.url(&format!("/gate/login?return_to={}", urlencode(return_to)))).send().await;
    assert_eq!(login.status, StatusCode::FOUND, "{}", login.message());
    let login_cookie = set_cookies(&login)[0].split(';').next().unwrap().to_string();
    let at_idp = Req::get(login.headers["location"].to_str().unwrap()).send().await;
    let callback = at_idp.headers["location"].to_str().unwrap().replace(ORIGIN, &s.gate.url(""));
    (callback, login_cookie)
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn sign_in_sets_a_session_and_returns_to_the_page() {
    let s = setup("2099-01-01T00:00:00Z").await;
    let (callback, login_cookie) = start_sign_in(&s, "/#/models/m1").await;
    let done = Req::get(&callback).header("cookie", &login_cookie).send().await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.message());
    assert_eq!(done.headers["location"], "/#/models/m1");
    let cookies = set_cookies(&done);
    let session = cookies.iter().find(|c| c.starts_with(&format!("{COOKIE}="))).unwrap();
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax") && session.contains("Max-Age=3600"));
    assert!(cookies.iter().any(|c| c.starts_with("mlflow-gate-login=;")), "the login cookie is cleared");
    let me = Req::get(s.gate.url("/gate/me")).header("cookie", session.split(';').next().unwrap()).send().await;
    assert_eq!(
        (me.json()["sub"].clone(), me.json()["groups"].clone()),
        ("alice".into(), serde_json::json!(["engineers"]))
    );
    assert!(!String::from_utf8_lossy(&me.body).contains("opaque"), "no IdP token reaches the page");
}

#[tokio::test]
async fn replayed_callback_is_refused_without_asking_the_idp_again() {
    let s = setup("2099-01-01T00:00:00Z").await;
    let (callback, login_cookie) = start_sign_in(&s, "/").await;
    let first = Req::get(&callback).header("cookie", &login_cookie).send().await;
    assert_eq!(first.status, StatusCode::FOUND, "{}", first.message());
    let replay = Req::get(&callback).header("cookie", &login_cookie).send().await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert!(replay.message().contains("replayed"), "{}", replay.message());
    assert!(set_cookies(&replay).is_empty(), "no session for a replay");
    assert_eq!(s.idp.token_requests(), 1);
    let other_state = callback.replace("state=", "state=x");
    assert_eq!(Req::get(&other_state).header("cookie", &login_cookie).send().await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(Req::get(&callback).send().await.status, StatusCode::UNAUTHORIZED, "no login cookie");
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn id_token_with_wrong_nonce_or_audience_is_refused() {
    let s = setup("2099-01-01T00:00:00Z").await;
    for (script, why) in [
        (Script { nonce: Some("another-login".into()), ..Script::default() }, "nonce"),
        (Script { aud: Some("another-app".into()), ..Script::default() }, "audience"),
    ] {
        s.idp.script(script);
        let (callback, login_cookie) = start_sign_in(&s, "/").await;
        let a = Req::get(&callback).header("cookie", &login_cookie).send().await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{why}");
        assert!(a.message().contains(why), "{why}: {}", a.message());
        assert!(!set_cookies(&a).iter().any(|c| c.starts_with(&format!("{COOKIE}="))), "{why}: no session");
    }
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn open_redirect_attempts_return_to_the_root_after_sign_in() {
    let s = setup("2099-01-01T00:00:00Z").await;
    for target in ["//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"] {
        let (callback, login_cookie) = start_sign_in(&s, target).await;
        let done = Req::get(&callback).header("cookie", &login_cookie).send().await;
        assert_eq!(done.status, StatusCode::FOUND, "{}", done.message());
        assert_eq!(done.headers["location"], "/", "{target}");
    }
}

const VIA_REGO: &str = r#"package mlflow_gate

import rego.v1

decision := {"allow": input.principal.via == "bearer", "reasons": [sprintf("seen via %s as %s", [input.principal.via, input.principal.sub])]}
"#;

#[tokio::test]
async fn policy_sees_the_same_principal_with_via_session_or_bearer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("via.rego"), VIA_REGO).unwrap();
    let s = setup_with("2099-01-01T00:00:00Z", dir.path()).await;
    let now = now_secs();
    let by_cookie = Req::get(s.gate.url(SEARCH)).header("cookie", &cookie(&session(&KEY, now, now))).send().await;
    assert_eq!(by_cookie.status, StatusCode::FORBIDDEN);
    assert!(by_cookie.message().contains("seen via session as alice"), "{}", by_cookie.message());
    let by_token = Req::get(s.gate.url(SEARCH)).token(&s.keys.token("Alice", &[])).send().await;
    assert_eq!(by_token.status, StatusCode::OK, "{}", by_token.message());
    assert_eq!(s.upstream.count(), 1, "only the bearer request reached MLflow");
}

#[tokio::test]
async fn a_session_from_one_gate_works_at_another_with_the_same_key_and_after_a_restart() {
    let a = setup("2099-01-01T00:00:00Z").await;
    let (callback, login_cookie) = start_sign_in(&a, "/").await;
    let done = Req::get(&callback).header("cookie", &login_cookie).send().await;
    let session = set_cookies(&done).into_iter().find(|c| c.starts_with(&format!("{COOKIE}="))).unwrap();
    let session = session.split(';').next().unwrap().to_string();
    a.gate.stop().await;
    let b = setup("2099-01-01T00:00:00Z").await;
    let me = Req::get(b.gate.url("/gate/me")).header("cookie", &session).send().await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.message());
    assert_eq!((me.json()["sub"].clone(), me.json()["via"].clone()), ("alice".into(), "session".into()));
    let api = Req::get(b.gate.url(SEARCH)).header("cookie", &session).send().await;
    assert_eq!(api.status, StatusCode::OK, "{}", api.message());
    assert_eq!(b.upstream.count(), 1);
}
