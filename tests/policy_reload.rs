//! Hot reload of the policy bundle and per-thread evaluation: a rule changed while requests flow, a broken file
//! (the last good bundle stays), a Kubernetes ConfigMap `..data` swap, SIGHUP to the real binary, engine reuse
//! across inputs and bundles, and the time limit that stops a runaway policy.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use mlflow_gate::config::Config;
use mlflow_gate::policy::{self, Bundle, EngineChoice, EvalError, Policy, Reload};
use mlflow_gate::stack::Gate;

const HEADER: &str = "package mlflow_gate\nimport rego.v1\n";
const READ: &str = "/api/2.0/mlflow/experiments/get?experiment_id=1";

/// A bundle that allows everything (`v` = 1) or denies everything with the reason `policy v<v>`.
fn policy_text(v: u32) -> String {
    if v == 1 {
        format!("{HEADER}\ndecision := {{\"allow\": true, \"reasons\": []}}\n")
    } else {
        format!("{HEADER}\ndecision := {{\"allow\": false, \"reasons\": [\"policy v{v}\"]}}\n")
    }
}

#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
fn write(dir: &Path, name: &str, text: &str) {
    // Write then rename, as editors and deploy tools do, so a poll never sees half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
fn load(dir: &Path) -> Bundle {
    Bundle::load(dir, "data.mlflow_gate.decision", Duration::from_millis(50)).unwrap()
}

/// Which policy version decided a request: 1 (allowed), n (denied with "policy vn"); panics on anything else.
fn version_of(a: &Answer) -> u32 {
    if a.status == StatusCode::OK {
        return 1;
    }
    assert_eq!(a.status, StatusCode::FORBIDDEN, "unexpected answer: {a:?}");
    let m = a.message();
    let v = m.split("policy v").nth(1).and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next());
    v.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("unexpected denial: {m}"))
}

/// A gate on port 0 started like `serve` does (so `build_gate` starts the reloader), with its `Gate` at hand.
struct Running {
    addr: SocketAddr,
    gate: Arc<Gate>,
    _upstream: Recorder,
    keys: Keys,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    #[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
    async fn start(policies: &Path, reload_interval_ms: u64) -> Running {
        let upstream = Recorder::start(Behaviour::default()).await;
        let keys = Keys::new();
        let mut toml = config_toml(upstream.addr, &keys.jwks_path(), policies, "");
        toml.push_str(&format!("reload_interval_ms = {reload_interval_ms}\n"));
        let config = Config::parse(&toml, Path::new("reload-test.toml")).unwrap();
        let listener = tokio::net::TcpListener::bind(config.server.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut server = config.server.clone();
        (server.header_read_timeout, server.shutdown_grace) = (Duration::from_secs(5), Duration::from_secs(1));
        let gate = mlflow_gate::build_gate(config).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = gate.clone();
        tokio::spawn(async move {
            let stop = async {
                let _ = rx.await;
            };
            mlflow_gate::server::serve(listener, served, &server, None, stop).await;
        });
        Running { addr, gate, _upstream: upstream, keys, stop: Some(tx) }
    }

    async fn version(&self) -> u32 {
        let token = self.keys.token("alice", &[]);
        version_of(&Req::get(format!("http://{}{READ}", self.addr)).token(&token).send().await)
    }

    fn policy(&self) -> &Policy {
        self.gate.policy()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_change_while_requests_flow_never_fails_a_request() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.rego", &policy_text(1));
    let gate = Arc::new(Running::start(dir.path(), 10).await);
    assert_eq!(gate.version().await, 1);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let gate = gate.clone();
            tokio::spawn(async move {
                // Each client sends requests until it sees the new rule; decisions only ever move forward.
                let (mut seen, mut count) = (Vec::new(), 0);
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline && count < 5_000 {
                    let v = gate.version().await;
                    assert!(seen.last().is_none_or(|&last| last <= v), "decision went back from v{seen:?} to v{v}");
                    seen.push(v);
                    count += 1;
                    if v == 2 {
                        break;
                    }
                }
                seen
            })
        })
        .collect();
    eventually(10, "requests with the old rule", || async { (gate._upstream.count() >= 20).then_some(()) }).await;
    write(dir.path(), "main.rego", &policy_text(2));
    for client in clients {
        let seen = client.await.unwrap();
        assert_eq!(seen.first(), Some(&1));
        assert_eq!(seen.last(), Some(&2), "a client never saw the new rule");
    }
    let stats = gate.policy().stats();
    assert_eq!((stats.reloads, stats.reload_failures), (1, 0));
}

#[tokio::test]
async fn broken_file_keeps_the_last_good_bundle_until_it_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.rego", &policy_text(1));
    let gate = Running::start(dir.path(), 10).await;
    let good = gate.policy().stats().revision;
    write(dir.path(), "main.rego", &format!("{HEADER}\ndecision := {{\"allow\": false}}\nx if {{ ]\n"));
    eventually(10, "the failed reload", || async { (gate.policy().stats().reload_failures >= 1).then_some(()) }).await;
    assert_eq!(gate.version().await, 1, "the last good bundle must stay in force");
    assert_eq!(gate.policy().stats().revision, good);
    let err = gate.policy().reload_now().unwrap_err();
    assert!(err.file().is_some_and(|f| f.ends_with("main.rego")), "{err}");
    assert_eq!(err.line(), Some(5), "{err}");
    write(dir.path(), "main.rego", &policy_text(3));
    eventually(10, "the fixed bundle", || async { (gate.version().await == 3).then_some(()) }).await;
    let stats = gate.policy().stats();
    assert_eq!(stats.reloads, 1);
    assert_ne!(stats.revision, good);
}

#[tokio::test]
async fn configmap_data_symlink_swap_is_picked_up() {
    // The layout kubelet writes: ..<timestamp>/ holds the files, ..data links to it, the visible files link
    // through ..data; an update writes a new ..<timestamp>/ and renames a new link over ..data.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..2025_01_01_00_00_00.1")).unwrap();
    std::fs::write(d.join("..2025_01_01_00_00_00.1/main.rego"), policy_text(1)).unwrap();
    std::os::unix::fs::symlink("..2025_01_01_00_00_00.1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/main.rego", d.join("main.rego")).unwrap();
    let gate = Running::start(d, 10).await;
    assert_eq!(gate.version().await, 1);
    std::fs::create_dir(d.join("..2025_01_01_00_05_00.2")).unwrap();
    std::fs::write(d.join("..2025_01_01_00_05_00.2/main.rego"), policy_text(2)).unwrap();
    std::os::unix::fs::symlink("..2025_01_01_00_05_00.2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..2025_01_01_00_00_00.1")).unwrap();
    eventually(10, "the swapped ConfigMap", || async { (gate.version().await == 2).then_some(()) }).await;
    assert_eq!(gate.policy().stats().reload_failures, 0);
}

/// The real binary, killed (by its own pid) when the test ends.
struct Binary(Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    let work = tempfile::tempdir().unwrap();
    let policies = work.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    write(&policies, "main.rego", &policy_text(1));
    let upstream = Recorder::start(Behaviour::default()).await;
    let keys = Keys::new();
    let mut toml = config_toml(upstream.addr, &keys.jwks_path(), &policies, "");
    toml.push_str("reload_interval_ms = 0\n");
    toml.push_str("\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    let config = work.path().join("gate.toml");
    std::fs::write(&config, toml).unwrap();
    let (addr_file, admin_file) = (work.path().join("addr"), work.path().join("admin-addr"));
    let child = Command::new(env!("CARGO_BIN_EXE_mlflow-gate"))
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--addr-file")
        .arg(&addr_file)
        .arg("--admin-addr-file")
        .arg(&admin_file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.path().join("gate.log")).unwrap())
        .spawn()
        .unwrap();
    let binary = Binary(child);
    let addr = eventually(30, "the binary to listen", || async { std::fs::read_to_string(&addr_file).ok() }).await;
    let admin = eventually(30, "the admin listener", || async { std::fs::read_to_string(&admin_file).ok() }).await;
    let token = keys.token("alice", &[]);
    let version = || async { version_of(&Req::get(format!("http://{addr}{READ}")).token(&token).send().await) };
    assert_eq!(version().await, 1);
    write(&policies, "main.rego", &policy_text(2));
    assert_eq!(version().await, 1, "polling is off: only SIGHUP reloads");
    let hup = Command::new("kill").args(["-HUP", &binary.0.id().to_string()]).status().unwrap();
    assert!(hup.success());
    eventually(10, "the reload on SIGHUP", || async { (version().await == 2).then_some(()) }).await;
    let log = std::fs::read_to_string(work.path().join("gate.log")).unwrap();
    assert!(log.contains("policy bundle reloaded") && log.contains("SIGHUP"), "{log}");
    let metrics = || async {
        let resp = Req::get(format!("http://{admin}/metrics")).send().await;
        String::from_utf8_lossy(&resp.body).into_owned()
    };
    let text = metrics().await;
    assert!(text.contains("mlflow_gate_policy_reloads_total 1\n"), "{text}");
    assert!(text.contains("mlflow_gate_policy_reload_failures_total 0\n"), "{text}");
    // The same read, repeated under one bundle, is decided from the decision cache; the reload was not.
    let counter = |text: &str, name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    assert!(counter(&text, "mlflow_gate_decision_cache_hits_total ") >= 1, "{text}");
    assert!(counter(&text, "mlflow_gate_decision_cache_misses_total ") >= 2, "one per bundle: {text}");
    let revision = |text: &str| {
        text.lines().find_map(|l| l.strip_prefix("mlflow_gate_policy_bundle_info{revision=\"")).map(str::to_string)
    };
    let good = revision(&text).expect("bundle info");
    // A broken file: refused, counted, and the last good bundle stays in force.
    write(&policies, "main.rego", "package mlflow_gate\ndecision := {\n");
    let hup = Command::new("kill").args(["-HUP", &binary.0.id().to_string()]).status().unwrap();
    assert!(hup.success());
    let text = eventually(10, "the failed reload to be counted", || async {
        let text = metrics().await;
        text.contains("mlflow_gate_policy_reload_failures_total 1\n").then_some(text)
    })
    .await;
    assert!(text.contains("mlflow_gate_policy_reloads_total 1\n"), "{text}");
    assert_eq!(revision(&text).as_deref(), Some(good.as_str()));
    assert_eq!(version().await, 2, "the last good bundle stays in force");
}

#[test]
fn reload_now_swaps_only_changed_files_and_in_flight_holders_keep_their_bundle() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.rego", &policy_text(1));
    let policy = Policy::new(load(dir.path()));
    assert_eq!(policy.reload_now().unwrap(), Reload::Unchanged);
    let before = policy.bundle();
    write(dir.path(), "main.rego", &policy_text(2));
    let Reload::Swapped { revision } = policy.reload_now().unwrap() else { panic!("expected a swap") };
    assert_eq!(policy.stats().revision, revision);
    assert_ne!(before.revision(), revision);
    let input = || policy::samples::all().remove(0).input();
    assert!(policy::evaluate(&before, input()).unwrap().allow, "a holder of the old bundle keeps its decision");
    assert_eq!(policy.evaluate(input()).unwrap().reasons, vec!["policy v2".to_string()]);
    assert_eq!((policy.stats().reloads, policy.stats().reload_failures), (1, 0));
}

#[test]
fn a_thread_reuses_its_engine_across_inputs_and_bundles_without_mixing_them() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "main.rego",
        &format!("{HEADER}\ndecision := {{\"allow\": input.principal.sub == \"alice\", \"reasons\": [input.principal.sub]}}\n"),
    );
    let by_sub = load(dir.path());
    let other = tempfile::tempdir().unwrap();
    write(other.path(), "main.rego", &policy_text(7));
    let deny_all = load(other.path());
    let input = |sub: &str| {
        let mut doc = policy::samples::all().remove(1).document();
        doc["principal"]["sub"] = sub.into();
        policy::input::to_rego(&doc)
    };
    for _ in 0..3 {
        let d = policy::evaluate(&by_sub, input("alice")).unwrap();
        assert!(d.allow && d.reasons == ["alice"]);
        let d = policy::evaluate(&by_sub, input("bob")).unwrap();
        assert!(!d.allow && d.reasons == ["bob"]);
        assert_eq!(policy::evaluate(&deny_all, input("alice")).unwrap().reasons, ["policy v7"]);
    }
}

const RUNAWAY: &str = "
default decision := {\"allow\": true, \"reasons\": []}

decision := {\"allow\": false, \"reasons\": [\"spun\"]} if spin

spin if {
    input.request.body.spin == true
    some x in numbers.range(1, 20000)
    some y in numbers.range(1, 20000)
    x * y < 0
}
";

#[test]
fn runaway_policy_is_stopped_by_the_time_limit_and_the_thread_recovers() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.rego", &format!("{HEADER}{RUNAWAY}"));
    for (choice, engine) in [(EngineChoice::Auto, "bytecode"), (EngineChoice::Interpreter, "interpreter")] {
        let bundle =
            Bundle::load_with(dir.path(), "data.mlflow_gate.decision", Duration::from_millis(50), choice).unwrap();
        assert_eq!(bundle.engine_name(), engine, "{:?}", bundle.interpreter_reason());
        let mut doc = policy::samples::all().remove(1).document();
        doc["request"]["body"]["spin"] = true.into();
        // On a thread of its own: the runaway evaluation must end (the test waits for that, not for a duration),
        // stopped by the time limit, and the next evaluation on that same thread must work.
        let (done, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runaway = policy::evaluate(&bundle, policy::input::to_rego(&doc));
            let calm = policy::evaluate(&bundle, policy::samples::all().remove(1).input());
            let _ = done.send((runaway, calm));
        });
        let (runaway, calm) = outcome
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{engine}: the runaway evaluation was never stopped"));
        let err = runaway.unwrap_err();
        let m = err.to_string().to_lowercase();
        assert!(matches!(&err, EvalError::Engine(_)) && m.contains("exceeded time limit"), "{engine}: {err}");
        assert!(calm.unwrap().allow, "{engine}: the next evaluation on this thread must work");
    }
}

#[tokio::test]
async fn runaway_policy_denies_the_request_and_nothing_reaches_mlflow() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.rego", &format!("{HEADER}{RUNAWAY}"));
    let gate = Running::start(dir.path(), 0).await;
    let a = Req::post(format!("http://{}/api/2.0/mlflow/experiments/create", gate.addr))
        .token(&gate.keys.token("alice", &[]))
        .json(r#"{"name": "e", "spin": true}"#)
        .send()
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");
    assert_eq!(gate._upstream.mutations(), 0);
}
