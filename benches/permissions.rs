//! Benchmark of resource permissions, in one run, as medians and ratios (never a pass/fail on time):
//! - the policy decision of a read whose object the gate resolved from its cache (`GetRun` with its run and
//!   experiment links, `input.resource.permissions`) against the same bundle's decision of a read no permission
//!   covers (the fast path as before): the difference is what a cached read check adds to a request (target:
//!   under 100 us median);
//! - filtering a page of 1,000 search results: parsing MLflow's page, one decision for all of its results
//!   (`candidates`, answered with `readable`) and serialising the kept ones (target: under 20 ms median).
//!
//! Run: `cargo bench --bench permissions` (or `scripts/bench.sh`). The cache look-up itself (moka, in memory) is
//! not in these figures: it is a hash-map read of about a microsecond.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use mlflow_gate::auth::Principal;
use mlflow_gate::mlflow::routes::{Operation, Resource};
use mlflow_gate::policy::{input, Bundle, Policy};
use serde_json::{json, Map, Value};

const ENTRYPOINT: &str = "data.mlflow_gate.decision";

fn principal() -> Principal {
    Principal {
        sub: "ben".into(),
        issuer: "https://idp.example".into(),
        groups: vec!["team-b".into()],
        claims: json!({"sub": "ben", "groups": ["team-b"]}),
        via: mlflow_gate::auth::Via::Bearer,
    }
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

/// Median time of `f` over `n` runs, after a warm-up.
fn measure(n: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..n.min(50) {
        f();
    }
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn chain(i: usize) -> Value {
    let groups = if i.is_multiple_of(3) { json!({"team-b": "NO_PERMISSIONS"}) } else { json!({"team-c": "EDIT"}) };
    json!([{"type": "run", "id": format!("r{i}"), "name": "train", "owner": "ana", "grants": {"users": {}, "groups": {}}},
        {"type": "experiment", "id": i.to_string(), "name": format!("exp-{i}"), "owner": "ana",
            "grants": {"users": {}, "groups": groups}}])
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let policy = Policy::new(Bundle::load(&dir, ENTRYPOINT, Duration::from_millis(200)).unwrap());
    let who = principal();
    let query = Map::new();
    let facts =
        |path: &'static str| input::RequestFacts { method: "GET", path, query: &query, body: None, workspace: None };

    // A read no permission covers, and a read checked against its (cached) chain.
    let plain_op = Operation::plain("ListScorers", true, Resource::Scorer);
    let plain_facts = facts("/api/3.0/mlflow/scorers/list");
    let plain_resource = json!({"target": {"experiment_id": "1"}});
    let checked_op = Operation::plain("GetRun", true, Resource::Run);
    let checked_facts = facts("/api/2.0/mlflow/runs/get");
    let checked_resource = json!({"target": {"run_id": "r1"}, "permissions": {"workspace": null, "anchor": "run",
        "exists": true, "problem": null, "chain": chain(1)}});
    let d = policy.evaluate(input::build_rego(&who, &checked_op, &checked_facts, &checked_resource)).unwrap();
    assert!(d.allow, "{:?}", d.reasons);
    let plain = measure(2000, || {
        black_box(policy.evaluate(input::build_rego(&who, &plain_op, &plain_facts, &plain_resource)).unwrap());
    });
    let checked = measure(2000, || {
        black_box(policy.evaluate(input::build_rego(&who, &checked_op, &checked_facts, &checked_resource)).unwrap());
    });
    // The same two, split: building the input document alone, and the decision on a built one (a clone of it).
    let plain_input = measure(2000, || {
        black_box(input::build_rego(&who, &plain_op, &plain_facts, &plain_resource));
    });
    let checked_input = measure(2000, || {
        black_box(input::build_rego(&who, &checked_op, &checked_facts, &checked_resource));
    });
    let built = input::build_rego(&who, &checked_op, &checked_facts, &checked_resource);
    let checked_decision = measure(2000, || {
        black_box(policy.evaluate(black_box(built.clone())).unwrap());
    });
    let built = input::build_rego(&who, &plain_op, &plain_facts, &plain_resource);
    let plain_decision = measure(2000, || {
        black_box(policy.evaluate(black_box(built.clone())).unwrap());
    });
    // What a request pays when the same input was decided before (the decision cache): the digest and a look-up.
    let repeated = measure(2000, || {
        black_box(policy.decide(&who, &checked_op, &checked_facts, &checked_resource).unwrap());
    });

    // A page of 1,000 runs: parse, decide all, keep and serialise.
    let search_op = Operation::plain("SearchRuns", true, Resource::Run);
    let search_facts = facts("/api/2.0/mlflow/runs/search");
    let page: Vec<Value> = (0..1000)
        .map(|i| {
            json!({"info": {"run_id": format!("r{i}"), "experiment_id": i.to_string(), "run_name": "train"},
            "data": {"metrics": [{"key": "auc", "value": 0.9, "timestamp": 1, "step": 0}],
                "tags": [{"key": "mlflow.user", "value": "ana"}]}})
        })
        .collect();
    let answer = serde_json::to_vec(&json!({"runs": page, "next_page_token": "abc"})).unwrap();
    let filter = || {
        let mut doc: Map<String, Value> = serde_json::from_slice(&answer).unwrap();
        let Some(Value::Array(items)) = doc.remove("runs") else { panic!("no runs") };
        let candidates: Vec<Value> = (0..items.len()).map(chain).collect();
        let resource = json!({"permissions": {"workspace": null, "candidates": candidates}});
        let d = policy.evaluate(input::build_rego(&who, &search_op, &search_facts, &resource)).unwrap();
        let readable: std::collections::HashSet<u64> =
            d.flags["readable"].as_array().unwrap().iter().filter_map(Value::as_u64).collect();
        let kept: Vec<Value> =
            items.into_iter().enumerate().filter(|(i, _)| readable.contains(&(*i as u64))).map(|(_, v)| v).collect();
        doc.insert("runs".into(), Value::Array(kept));
        black_box(serde_json::to_vec(&doc).unwrap());
        readable.len()
    };
    assert_eq!(filter(), 666, "a third of the page is hidden from team-b");
    let page_time = measure(30, || {
        black_box(filter());
    });

    let added = checked.saturating_sub(plain);
    println!("read decision, no permission check (baseline): {:>9.1} us median", plain.as_secs_f64() * 1e6);
    println!("read decision, cached permission check:         {:>9.1} us median", checked.as_secs_f64() * 1e6);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "  of which building the input: {:.1} us (baseline) and {:.1} us (checked); the decision on a built input: \
         {:.1} us and {:.1} us",
        us(plain_input),
        us(checked_input),
        us(plain_decision),
        us(checked_decision)
    );
    println!(
        "added by the check: {:.1} us median (target < 100 us), ratio {:.2}x",
        added.as_secs_f64() * 1e6,
        checked.as_secs_f64() / plain.as_secs_f64()
    );
    println!(
        "read decision, cached permission check, a repeated input (decision cache): {:.1} us median ({:.2}x of \
         evaluating it)",
        us(repeated),
        repeated.as_secs_f64() / checked.as_secs_f64()
    );
    println!("filtering a page of 1,000 runs: {:.2} ms median (target < 20 ms)", page_time.as_secs_f64() * 1e3);
}
