//! Benchmark of the policy phase of a request: the default bundle (`policies/`, or `$POLICY_DIR`) evaluated on
//! realistic inputs through `Policy::evaluate` (the request path: the bundle in force on this thread's engine, the
//! bytecode VM), against a trivial bundle evaluated the same way in the same run, with the building of the input
//! document and the same bundle on regorus' interpreter beside them. Ends with a summary of medians and the
//! default/baseline ratio.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::Criterion;
use mlflow_gate::policy::{samples, Bundle, EngineChoice, Policy};

const ENTRYPOINT: &str = "data.mlflow_gate.decision";
const TARGET_US: f64 = 50.0;

fn load(dir: &Path) -> Policy {
    let bundle = Bundle::load(dir, ENTRYPOINT, Duration::from_millis(50))
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", dir.display()));
    Policy::new(bundle)
}

fn policies_dir() -> PathBuf {
    std::env::var_os("POLICY_DIR").map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"), PathBuf::from)
}

fn id(sample: &samples::Sample) -> String {
    sample.name.replace(' ', "_")
}

fn bench(c: &mut Criterion, trivial: &Path) {
    let default = load(&policies_dir());
    assert_eq!(default.bundle().engine_name(), "bytecode", "{:?}", default.bundle().interpreter_reason());
    let baseline = load(trivial);
    let samples = samples::all();
    for s in &samples {
        // Measure decisions, not the error path.
        let d = default.evaluate(s.input()).unwrap_or_else(|e| panic!("default bundle on {}: {e}", s.name));
        eprintln!("default bundle, {}: allow={} reasons={:?}", s.name, d.allow, d.reasons);
    }
    let mut group = c.benchmark_group("default");
    for s in &samples {
        let input = s.input();
        group.bench_function(id(s), |b| b.iter(|| default.evaluate(black_box(input.clone()))));
    }
    group.finish();
    let mut group = c.benchmark_group("baseline");
    for s in &samples {
        let input = s.input();
        group.bench_function(id(s), |b| b.iter(|| baseline.evaluate(black_box(input.clone()))));
    }
    group.finish();
    let mut group = c.benchmark_group("input");
    for s in &samples {
        group.bench_function(id(s), |b| b.iter(|| black_box(s.input())));
    }
    group.finish();
    // The same bundle on the interpreter (the engine before bytecode, and the fallback), also per thread.
    let interpreter = Policy::new(
        Bundle::load_with(&policies_dir(), ENTRYPOINT, Duration::from_millis(50), EngineChoice::Interpreter).unwrap(),
    );
    let mut group = c.benchmark_group("interpreter");
    for s in &samples {
        let input = s.input();
        group.bench_function(id(s), |b| b.iter(|| interpreter.evaluate(black_box(input.clone()))));
    }
    group.finish();
}

/// Where criterion keeps its results: `$CRITERION_HOME`, `$CARGO_TARGET_DIR/criterion`, or beside this binary.
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).map_or_else(|| PathBuf::from("target"), Path::to_path_buf).join("criterion")
}

/// The median of one benchmark in microseconds, from this run's `new/estimates.json` (files left by an earlier
/// run, e.g. of a benchmark this run's filter skipped, are ignored).
fn median_us(group: &str, id: &str) -> Option<f64> {
    let path = criterion_home().join(group).join(id).join("new/estimates.json");
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if modified < *STARTED.get()? {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json.pointer("/median/point_estimate")?.as_f64().map(|ns| ns / 1000.0)
}

/// How many VM instructions the default bundle executes for a sample: a deterministic measure of the policy's
/// cost, unlike times on a shared machine (binary search on the VM's instruction limit).
fn instructions(bundle: &Bundle, input: &regorus::Value) -> Option<usize> {
    let (mut lo, mut hi) = (1usize, 10_000_000usize);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let mut vm = bundle.new_vm()?;
        vm.set_max_instructions(mid);
        vm.set_input(input.clone());
        if vm.execute().is_ok() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

fn summary() {
    println!("\npolicy_eval summary (medians, µs; policies: {})", policies_dir().display());
    let bundle = load(&policies_dir()).bundle();
    let head = ["default", "baseline", "ratio", "input", "interpreter", "vs interp.", "VM instr."];
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9} {:>14} {:>12} {:>10}",
        "sample", head[0], head[1], head[2], head[3], head[4], head[5], head[6]
    );
    for s in samples::all() {
        let id = id(&s);
        let [d, b, i, t] = ["default", "baseline", "input", "interpreter"].map(|g| median_us(g, &id));
        let (Some(d), Some(b)) = (d, b) else {
            println!("{id:<24} (not measured in this run)");
            continue;
        };
        let verdict = if d < TARGET_US { "ok" } else { "OVER" };
        let instr = instructions(&bundle, &s.input()).map_or("-".to_string(), |n| n.to_string());
        let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        println!(
            "{id:<24} {d:>9.2} {b:>9.2} {:>8.1}x {:>9} {:>14} {:>12} {instr:>10}   default under {TARGET_US} µs: {verdict}",
            d / b,
            show(i),
            show(t),
            t.map_or("-".to_string(), |t| format!("{:.1}x faster", t / d))
        );
    }
}

static STARTED: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();

fn main() {
    let _ = STARTED.set(std::time::SystemTime::now());
    let trivial = tempfile::tempdir().unwrap();
    std::fs::write(
        trivial.path().join("main.rego"),
        "package mlflow_gate\nimport rego.v1\ndecision := {\"allow\": true, \"reasons\": []}\n",
    )
    .unwrap();
    let mut c = Criterion::default()
        .sample_size(60)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench(&mut c, trivial.path());
    c.final_summary();
    summary();
}
