//! Policy, start-up side: reading a policy directory into a compiled, warmed and self-tested regorus engine.
//! A bundle that fails to load, or whose entrypoint errors on the sample input, is refused with the file (and,
//! for Rego, the line) at fault.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{evaluate, input};

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The directory or a file could not be read.
    #[error("{path}: {message}")]
    Io {
        /// File or directory.
        path: String,
        /// What failed.
        message: String,
    },
    /// A Rego or data file does not compile or load (regorus' message carries the line).
    #[error("{path}: {message}")]
    Compile {
        /// File at fault.
        path: String,
        /// regorus' message.
        message: String,
    },
    /// The entrypoint failed on the sample input.
    #[error("policy self-test failed: evaluating {entrypoint} on a sample request: {message}")]
    SelfTest {
        /// The entrypoint.
        entrypoint: String,
        /// What went wrong.
        message: String,
    },
}

/// A loaded policy bundle.
pub struct Bundle {
    engine: regorus::Engine,
    entrypoint: String,
    revision: String,
    files: Vec<PathBuf>,
}

impl Bundle {
    /// Loads every `*.rego` (except `*_test.rego`) and `*.json` file of `dir`, in name order, compiles, warms and
    /// self-tests the entrypoint. `timeout` bounds each evaluation.
    pub fn load(dir: &Path, entrypoint: &str, timeout: Duration) -> Result<Bundle, BundleError> {
        let files = policy_files(dir, false)?;
        let mut engine = regorus::Engine::new();
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit: timeout,
            check_interval: NonZeroU32::MIN.saturating_add(63),
        });
        let revision = load_files(&mut engine, &files)?;
        Bundle { engine, entrypoint: entrypoint.to_string(), revision, files }.warm_and_self_test()
    }

    /// The warmed engine (clone it to evaluate).
    pub fn engine(&self) -> &regorus::Engine {
        &self.engine
    }

    /// The rule that yields the decision.
    pub fn entrypoint(&self) -> &str {
        &self.entrypoint
    }

    /// A hash of every file of the bundle (names and contents): which policy decided.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The files that make up the bundle.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Evaluates the entrypoint on a sample read request and keeps the engine that did it: regorus prepares its
    /// analysis on the first evaluation, and clones of a warmed engine skip that work. Undefined builtins and
    /// malformed decisions surface here, at start, rather than on every request.
    fn warm_and_self_test(mut self) -> Result<Bundle, BundleError> {
        let fail = |message: String| BundleError::SelfTest { entrypoint: self.entrypoint.clone(), message };
        let mut warmed = self.engine.clone();
        warmed.set_input(input::sample());
        warmed.eval_rule(self.entrypoint.clone()).map_err(|e| fail(e.to_string()))?;
        evaluate(&self, input::sample()).map_err(|e| fail(e.to_string()))?;
        self.engine = warmed;
        Ok(self)
    }
}

/// Lists the policy files of a directory in name order: `*.rego` (with or without `*_test.rego`) and `*.json`.
/// Entries whose names start with `.` are skipped (Kubernetes ConfigMap mounts keep their data under `..data`).
pub fn policy_files(dir: &Path, with_tests: bool) -> Result<Vec<PathBuf>, BundleError> {
    let io = |e: std::io::Error| BundleError::Io { path: dir.display().to_string(), message: e.to_string() };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let is_test = name.ends_with("_test.rego");
        if (name.ends_with(".rego") && (with_tests || !is_test)) || name.ends_with(".json") {
            files.push(path);
        }
    }
    files.sort();
    if !files.iter().any(|f| f.extension().is_some_and(|e| e == "rego")) {
        return Err(BundleError::Io { path: dir.display().to_string(), message: "holds no *.rego file".into() });
    }
    Ok(files)
}

/// Adds the files to an engine and returns the bundle revision (SHA-256 over names and contents).
pub fn load_files(engine: &mut regorus::Engine, files: &[PathBuf]) -> Result<String, BundleError> {
    let mut hash = Sha256::new();
    for file in files {
        let path = file.display().to_string();
        let text = std::fs::read_to_string(file)
            .map_err(|e| BundleError::Io { path: path.clone(), message: e.to_string() })?;
        hash.update(file.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
        hash.update([0]);
        hash.update(text.as_bytes());
        hash.update([0]);
        let compile = |message: String| BundleError::Compile { path: path.clone(), message };
        if path.ends_with(".json") {
            let value = regorus::Value::from_json_str(&text).map_err(|e| compile(format!("not valid JSON: {e}")))?;
            engine.add_data(value).map_err(|e| compile(e.to_string()))?;
        } else {
            engine.add_policy(path.clone(), text).map_err(|e| compile(e.to_string()))?;
        }
    }
    let digest = hash.finalize();
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}
