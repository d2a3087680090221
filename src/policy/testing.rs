//! Policy tooling, outside the request path: the unit-test runner behind `mlflow-gate policy test` (regorus has no
//! `opa test`). Test rules follow OPA's conventions (`test_*` rules, `with input as ...`), so the same files run
//! under `opa test` too.

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::bundle::{load_files, policy_files, BundleError};

/// The outcome of one test rule.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// File that defines the rule.
    pub file: PathBuf,
    /// Full rule path, e.g. `data.mlflow_gate.test_ci_may_promote`.
    pub rule: String,
    /// Whether it evaluated to `true`.
    pub passed: bool,
    /// Why it failed (false, undefined, or the evaluation error).
    pub failure: Option<String>,
}

/// Line coverage of one policy file (test files excluded).
#[derive(Debug, Clone)]
pub struct FileCoverage {
    /// The file.
    pub file: String,
    /// Lines evaluated at least once.
    pub covered: usize,
    /// Lines that could have been evaluated.
    pub coverable: usize,
    /// Coverable lines never evaluated.
    pub missed: Vec<u32>,
}

/// Everything `policy test` reports.
#[derive(Debug, Clone)]
pub struct TestReport {
    /// One entry per test rule, in file and line order.
    pub results: Vec<TestResult>,
    /// Coverage per non-test policy file.
    pub coverage: Vec<FileCoverage>,
}

impl TestReport {
    /// Number of passing tests.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }

    /// Number of failing tests.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
}

/// Finds the `test_*` rules of a Rego file: `(package, rule)` pairs, in order, each once.
pub fn test_rules(text: &str) -> Vec<(String, String)> {
    let mut package = String::new();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("package ") {
            package = p.trim().to_string();
            continue;
        }
        let Some(rest) = line.strip_prefix("test_") else { continue };
        let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        let name = format!("test_{}", rest.get(..name_len).unwrap_or_default());
        if !package.is_empty() && seen.insert((package.clone(), name.clone())) {
            out.push((package.clone(), name));
        }
    }
    out
}

/// Runs every test rule of the bundle in `dir` (policy, data and `*_test.rego` files) with coverage on.
pub fn run(dir: &Path) -> Result<TestReport, BundleError> {
    let files = policy_files(dir, true)?;
    let mut engine = regorus::Engine::new();
    engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
        limit: Duration::from_secs(10),
        check_interval: NonZeroU32::MIN.saturating_add(63),
    });
    load_files(&mut engine, &files)?;
    engine.set_enable_coverage(true);
    let mut results = Vec::new();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "rego")) {
        let text = std::fs::read_to_string(file)
            .map_err(|e| BundleError::Io { path: file.display().to_string(), message: e.to_string() })?;
        for (package, name) in test_rules(&text) {
            let rule = format!("data.{package}.{name}");
            let outcome = engine.eval_rule(rule.clone());
            let failure = match outcome {
                Ok(regorus::Value::Bool(true)) => None,
                Ok(regorus::Value::Undefined) => Some("undefined (a condition in the test did not hold)".to_string()),
                Ok(other) => Some(format!("evaluated to {other}")),
                Err(e) => Some(format!("error: {e}")),
            };
            results.push(TestResult { file: file.clone(), rule, passed: failure.is_none(), failure });
        }
    }
    let coverage = match engine.get_coverage_report() {
        Ok(report) => report
            .files
            .iter()
            .filter(|f| !f.path.ends_with("_test.rego"))
            .map(|f| FileCoverage {
                file: f.path.clone(),
                covered: f.covered.len(),
                coverable: f.covered.len() + f.not_covered.len(),
                missed: f.not_covered.iter().copied().collect(),
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    Ok(TestReport { results, coverage })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_rules_are_found_once_per_name() {
        let text = "package a.b\n\ntest_one if true\ntest_two if {\n  true\n}\ntest_one if false\nnot_a_test if true\n  test_indented if true\n";
        let found = test_rules(text);
        assert_eq!(found, vec![("a.b".into(), "test_one".into()), ("a.b".into(), "test_two".into())]);
    }

    #[test]
    fn failing_and_passing_tests_are_reported() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let write = |n: &str, t: &str| std::fs::write(dir.path().join(n), t).unwrap_or_else(|e| panic!("{e}"));
        write("p.rego", "package p\nimport rego.v1\nallow if input.user == \"a\"\n");
        write("p_test.rego", "package p\nimport rego.v1\ntest_a if allow with input as {\"user\": \"a\"}\ntest_b if allow with input as {\"user\": \"b\"}\n");
        let report = run(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((report.passed(), report.failed()), (1, 1));
        let failed = report.results.iter().find(|r| !r.passed).map(|r| r.rule.clone());
        assert_eq!(failed.as_deref(), Some("data.p.test_b"));
        assert!(report.coverage.iter().any(|c| c.file.ends_with("p.rego") && c.covered > 0));
    }
}
