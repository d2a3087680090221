//! Mints many distinct bearer tokens for `scripts/bench-proxy.sh` (the "fresh token per request" scenarios), one
//! per line, signed with the key of a `mlflow-gate dev keygen` directory, on every core.
//!
//! `cargo run --release --example bench_tokens -- KEY_DIR ISSUER AUDIENCE SUB COUNT OUT_FILE`
//!
//! Each token differs by its `jti`, so none is a repeat of another (the gate's verified-token cache cannot help).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [dir, issuer, audience, sub, count, out] = a.as_slice() else {
        panic!("usage: bench_tokens KEY_DIR ISSUER AUDIENCE SUB COUNT OUT_FILE");
    };
    let dir = PathBuf::from(dir);
    let count: usize = count.parse().expect("COUNT");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let exp = mlflow_gate::devkeys::now_secs() + 3 * 3600;
    let parts: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let dir = &dir;
                s.spawn(move || {
                    (t..count)
                        .step_by(threads)
                        .map(|i| {
                            let claims = serde_json::json!({"iss": issuer, "aud": audience, "sub": sub,
                                "exp": exp, "jti": format!("bench-{i}")});
                            mlflow_gate::devkeys::mint_from_dir(dir, &claims).unwrap()
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut f = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    for t in parts.iter().flatten() {
        writeln!(f, "{t}").unwrap();
    }
}
