//! Micro-benchmarks of the request path before the policy: JWT authentication cold (a token never seen: header
//! checks, RS256 signature, claims) and cached (the same token again: hash and look-up, see `auth/cache.rs`), and
//! classification (canonical target, request context, route). Ends with a summary of medians, and whether a
//! repeated token authenticates in under 5 µs (issue 13's budget).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::Criterion;
use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use mlflow_gate::auth::Authenticator;
use mlflow_gate::devkeys;
use mlflow_gate::pipeline::classify;

const CACHED_BUDGET_US: f64 = 5.0;
/// More distinct tokens than the cache holds, so the cold case keeps missing.
const COLD_TOKENS: usize = 6000;

fn authenticator(dir: &Path) -> Authenticator {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[[auth.issuers]]\nissuer = \"https://idp.bench\"\naudiences = [\"mlflow\"]\nalgorithms = [\"RS256\"]\njwks_file = \"{}\"\n[policy]\ndir = \"{}\"\n",
        dir.join("jwks.json").display(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies").display()
    );
    let config = mlflow_gate::config::Config::parse(&toml, Path::new("bench.toml")).unwrap();
    Authenticator::new(&config.auth).unwrap()
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    h
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let key = devkeys::generate(jsonwebtoken::Algorithm::RS256, "k1").unwrap();
    devkeys::write_dir(dir.path(), &key).unwrap();
    let auth = authenticator(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let exp = devkeys::now_secs() + 3600;
    let mint = |i: usize| {
        let claims = serde_json::json!({"iss": "https://idp.bench", "aud": "mlflow", "sub": "bench", "exp": exp,
            "jti": format!("t{i}")});
        bearer(&devkeys::mint(&key.private_pem, jsonwebtoken::Algorithm::RS256, Some("k1"), &claims).unwrap())
    };
    eprintln!("request_path: minting {COLD_TOKENS} tokens");
    let cold: Vec<HeaderMap> = (0..COLD_TOKENS).map(mint).collect();
    let repeated = mint(usize::MAX);
    assert!(rt.block_on(auth.authenticate(&repeated, None)).is_ok());
    let mut group = c.benchmark_group("auth");
    let mut i = 0;
    group.bench_function("cold", |b| {
        b.iter(|| {
            i = (i + 1) % cold.len();
            black_box(rt.block_on(auth.authenticate(&cold[i], None)).is_ok())
        })
    });
    group.bench_function("cached", |b| b.iter(|| black_box(rt.block_on(auth.authenticate(&repeated, None)).is_ok())));
    group.finish();

    let mut group = c.benchmark_group("classify");
    let headers = HeaderMap::new();
    for (name, method, uri) in [
        ("read", Method::GET, "/api/2.0/mlflow/registered-models/get?name=m1"),
        ("search", Method::POST, "/api/2.0/mlflow/runs/search"),
        ("set_tag", Method::POST, "/api/2.0/mlflow/registered-models/set-tag"),
    ] {
        let uri: Uri = uri.parse().unwrap();
        group.bench_function(name, |b| {
            b.iter(|| black_box(classify::head(&method, &uri, Version::HTTP_11, &headers, "0123456789abcdef").is_ok()))
        });
    }
    group.finish();
}

/// Where criterion keeps its results (as in policy_eval.rs).
fn median_us(group: &str, id: &str) -> Option<f64> {
    let home = std::env::var_os("CRITERION_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|t| std::path::PathBuf::from(t).join("criterion")))?;
    let path = home.join(group).join(id).join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json.pointer("/median/point_estimate")?.as_f64().map(|ns| ns / 1000.0)
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
    println!("\nrequest_path summary (medians, µs)");
    for (g, id) in
        [("auth", "cold"), ("auth", "cached"), ("classify", "read"), ("classify", "search"), ("classify", "set_tag")]
    {
        match median_us(g, id) {
            Some(v) => println!("{g}/{id:<10} {v:>9.2}"),
            None => println!("{g}/{id:<10} (not measured in this run)"),
        }
    }
    if let (Some(cold), Some(cached)) = (median_us("auth", "cold"), median_us("auth", "cached")) {
        let verdict = if cached < CACHED_BUDGET_US { "ok" } else { "OVER" };
        println!(
            "a repeated token: {cached:.2} µs ({:.0}x faster than cold); under {CACHED_BUDGET_US} µs: {verdict}",
            cold / cached
        );
    }
}
