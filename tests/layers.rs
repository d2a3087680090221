//! The modules of `src/` form layers: a module imports only from modules in lower layers (never from one above it,
//! never in a cycle). This test reads every `crate::<module>` path in `src/` (comments excluded) and fails on an
//! edge that goes sideways or upward, or on a top-level module missing from the map below (place it first).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may import from any module in a lower layer.
const LAYERS: &[&[&str]] = &[
    // Calendar arithmetic (timestamps of the audit log and the log line).
    &["civil"],
    // Leaves: no knowledge of requests.
    &["fold", "body", "tls", "audit", "metrics", "devkeys", "client", "fleetdb", "logline"],
    // The one place an error becomes a response.
    &["error"],
    // MLflow's HTTP surface as data: route table, canonical target, parameters, names, stamps, events, workflow tags.
    &["mlflow"],
    // The validated configuration.
    &["config"],
    // Services the request path uses: identity, forwarding and the gate's own MLflow calls, webhooks, capacity.
    &["auth", "proxy", "webhooks", "limits"],
    // Browser sign-in: the session cookie becomes a principal; the gate's sign-in pages.
    &["browser"],
    // The policy and its input document.
    &["policy"],
    // The request's phases: classify, enrich, after-effects.
    &["pipeline"],
    // The approval workflow (served by the gate after the policy allowed it).
    &["approvals"],
    // The review page (the serving phases on the approve request a reviewer could send).
    &["reviews"],
    // The order of the phases for serving.
    &["stack"],
    // Entry points: listeners, and the tools that run the phases without serving.
    &["server", "admin", "explain"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`foo_tests.rs` belongs to `foo`); `None` for the crate root.
#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_string_lossy().into_owned();
    let name = first.trim_end_matches(".rs");
    let name = name.strip_suffix("_tests").unwrap_or(name);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// Every `crate::<name>` in the file's code (comment lines skipped).
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn src_modules_import_only_from_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let Some(from) = top_module(&src, file) else { continue };
        let Some(from_layer) = layer_of(&from) else {
            problems.push(format!("{}: module {from} is not in the layer map of tests/layers.rs", file.display()));
            continue;
        };
        for to in imports(&std::fs::read_to_string(file).unwrap()) {
            if to == from {
                continue;
            }
            match layer_of(&to) {
                Some(to_layer) if to_layer < from_layer => {}
                Some(_) => {
                    problems.push(format!("{}: {from} imports crate::{to}, which is not below it", file.display()))
                }
                None => problems.push(format!("{}: crate::{to} is not in the layer map", file.display())),
            }
        }
    }
    assert!(problems.is_empty(), "layer violations:\n{}", problems.join("\n"));
}

#[test]
fn the_check_sees_an_upward_import() {
    assert!(imports("use crate::stack::Gate;\n// use crate::server;\n").contains("stack"));
    assert!(!imports("// crate::server::ConnInfo\n").contains("server"));
    assert!(layer_of("mlflow") < layer_of("stack"));
}
