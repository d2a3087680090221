//! Start-up refusals and fail-closed evaluation: a bundle that does not compile, or whose entrypoint errors on the
//! sample input, stops the gate from starting (and `mlflow-gate check` names the file and line); an evaluation
//! error at request time denies.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use http::StatusCode;
use mlflow_gate::policy::Bundle;

#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
fn bundle_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn load(dir: &Path) -> Result<Bundle, String> {
    Bundle::load(dir, "data.mlflow_gate.decision", Duration::from_millis(100)).map_err(|e| e.to_string())
}

const HEADER: &str = "package mlflow_gate\nimport rego.v1\n";

#[test]
fn syntax_error_names_the_file_and_line() {
    let dir = bundle_dir(&[(
        "broken.rego",
        &format!("{HEADER}\ndecision := {{\"allow\": true}}\n\nallow if {{ input.x == }}\n"),
    )]);
    let err = load(dir.path()).err().unwrap_or_default();
    assert!(err.contains("broken.rego") && err.contains(":6:"), "{err}");
}

#[test]
fn entrypoint_failing_on_the_sample_input_refuses_to_start() {
    // regorus has no io.jwt: the policy compiles but errors on every evaluation.
    let dir =
        bundle_dir(&[("p.rego", &format!("{HEADER}\ndecision := {{\"allow\": io.jwt.decode(\"x\")[0] == {{}}}}\n"))]);
    let err = load(dir.path()).err().unwrap_or_default();
    assert!(err.contains("self-test") && err.contains("io.jwt.decode"), "{err}");
    let dir = bundle_dir(&[("p.rego", &format!("{HEADER}\ndecision := \"yes\"\n"))]);
    assert!(load(dir.path()).err().unwrap_or_default().contains("malformed"));
    let dir = bundle_dir(&[("p.rego", &format!("{HEADER}\nallow := true\n"))]);
    assert!(load(dir.path()).is_err(), "a bundle without the entrypoint must not load");
}

#[tokio::test]
async fn evaluation_error_at_request_time_denies() {
    // Fine on the sample input, an error (integer division by zero) when the request has a body with n = 0.
    let policy = format!("{HEADER}\ndecision := {{\"allow\": true}} if input.request.body == null\n\ndecision := {{\"allow\": 10 / input.request.body.n > 1}} if input.request.body != null\n");
    let dir = bundle_dir(&[("p.rego", &policy)]);
    let upstream = Recorder::start(Behaviour::default()).await;
    let keys = Keys::new();
    let gate = GateHandle::start_toml(&config_toml(upstream.addr, &keys.jwks_path(), dir.path(), "")).await;
    let token = keys.token("alice", &[]);
    let ok = Req::get(gate.url("/api/2.0/mlflow/experiments/search")).token(&token).send().await;
    assert_eq!(ok.status, StatusCode::OK);
    let denied = Req::post(gate.url("/api/2.0/mlflow/experiments/create"))
        .token(&token)
        .json(r#"{"name":"e","n":0}"#)
        .send()
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert!(denied.message().contains("could not be evaluated"), "{}", denied.message());
    assert_eq!(upstream.mutations(), 0);
    gate.stop().await;
}

#[test]
fn check_command_reports_config_and_policy_faults_and_passes_a_good_config() {
    let bin = env!("CARGO_BIN_EXE_mlflow-gate");
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let good = config_toml("127.0.0.1:5000".parse().unwrap(), &keys.jwks_path(), &policies_dir(), "");
    let run = |toml: &str| {
        let path = dir.path().join("gate.toml");
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(bin).args(["check", "--config"]).arg(&path).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, text) = run(&good);
    assert!(ok, "{text}");
    let (ok, text) = run(&good.replace("algorithms = [\"RS256\"]", "algorithms = [\"none\"]"));
    assert!(!ok && text.contains("gate.toml: auth.issuers[0].algorithms:"), "{text}");
    let broken = bundle_dir(&[("bad.rego", &format!("{HEADER}\ndecision := {{\"allow\": true}}\nx if {{ ]\n"))]);
    let (ok, text) = run(&good.replace(&policies_dir().display().to_string(), &broken.path().display().to_string()));
    assert!(!ok && text.contains("bad.rego:5"), "{text}");
}

#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
fn copy_policies(shadow_all: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(policies_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        std::fs::copy(&path, dir.path().join(name)).unwrap();
    }
    let data = dir.path().join("data.json");
    let text = std::fs::read_to_string(&data).unwrap();
    std::fs::write(&data, text.replace("\"shadow_all\": false", &format!("\"shadow_all\": {shadow_all}"))).unwrap();
    dir
}

#[tokio::test]
async fn whole_bundle_shadow_mode_allows_but_counts_would_deny() {
    let upstream = Recorder::start(Behaviour::default()).await;
    let keys = Keys::new();
    let policies = copy_policies(true);
    let toml =
        config_toml(upstream.addr, &keys.jwks_path(), policies.path(), "") + "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let gate = GateHandle::start_toml(&toml).await;
    let admin = gate.admin.unwrap();
    let delete = "/api/2.0/mlflow/registered-models/delete";
    let a = Req::delete(gate.url(delete)).token(&keys.token("alice", &[])).json(r#"{"name":"m"}"#).send().await;
    assert_eq!(a.status, StatusCode::OK, "shadow mode must not enforce: {:?}", a.body);
    assert_eq!(upstream.hits(delete), 1);
    let metrics = Req::get(format!("http://{admin}/metrics")).send().await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(text.contains("mlflow_gate_would_deny_total{operation=\"DeleteRegisteredModel\"} 1"), "{text}");
    assert!(
        text.contains(
            "mlflow_gate_requests_total{operation=\"DeleteRegisteredModel\",decision=\"allow\",status=\"200\"} 1"
        ),
        "{text}"
    );
    gate.stop().await;

    // The same request with the bundle enforcing is denied and never reaches MLflow.
    let policies = copy_policies(false);
    let upstream = Recorder::start(Behaviour::default()).await;
    let gate = GateHandle::start_toml(&config_toml(upstream.addr, &keys.jwks_path(), policies.path(), "")).await;
    let a = Req::delete(gate.url(delete)).token(&keys.token("alice", &[])).json(r#"{"name":"m"}"#).send().await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(upstream.hits(delete), 0);
    gate.stop().await;
}

#[test]
fn policy_test_and_eval_commands_report_as_the_security_team_needs() {
    let bin = env!("CARGO_BIN_EXE_mlflow-gate");
    let dir = bundle_dir(&[
        (
            "main.rego",
            &format!("{HEADER}\ndecision := {{\"allow\": input.principal.sub == \"ci\", \"reasons\": []}}\n"),
        ),
        (
            "main_test.rego",
            &format!(
                "{HEADER}\ntest_ci_allowed if decision.allow with input as {{\"principal\": {{\"sub\": \"ci\"}}}}\n\
                 test_everyone_allowed if decision.allow with input as {{\"principal\": {{\"sub\": \"alice\"}}}}\n"
            ),
        ),
    ]);
    let out = Command::new(bin).args(["policy", "test"]).arg(dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a failing test must fail the command: {text}");
    assert!(
        text.contains("FAIL data.mlflow_gate.test_everyone_allowed (") && text.contains("main_test.rego)"),
        "{text}"
    );
    assert!(!text.contains("test_ci_allowed ("), "{text}");
    assert!(text.contains("coverage:") && text.contains("main.rego"), "{text}");
    assert!(text.contains("serving: data.mlflow_gate.decision on the bytecode VM"), "{text}");
    assert_eq!(text.trim_end().lines().last(), Some("1 passed, 1 failed"), "{text}");

    let out = Command::new(bin).args(["policy", "test"]).arg(policies_dir()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.trim_end().ends_with(" passed, 0 failed"), "{text}");

    let input = dir.path().join("input.json");
    std::fs::write(&input, r#"{"principal": {"sub": "ci"}}"#).unwrap();
    let out =
        Command::new(bin).args(["policy", "eval", "--input"]).arg(&input).arg("--policies").arg(dir.path()).output();
    let out = out.unwrap();
    let decision: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decision["allow"], true, "{decision}");
}
