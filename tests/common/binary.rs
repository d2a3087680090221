//! The real `mlflow-gate` binary as a child process (its own multi-threaded runtime, measurable RSS), started with
//! `serve --addr-file` and killed (by its own pid) when dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running gate binary.
pub struct GateProcess {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl GateProcess {
    /// Writes `toml` to a config file, starts the binary on it, and waits until it listens (at most 60 s).
    pub async fn start(toml: &str) -> GateProcess {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gate.toml");
        std::fs::write(&config, toml).unwrap();
        let addr_file = dir.path().join("addr");
        let child = Command::new(env!("CARGO_BIN_EXE_mlflow-gate"))
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--addr-file")
            .arg(&addr_file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("gate.log")).unwrap())
            .spawn()
            .unwrap();
        let mut process = GateProcess { child, addr: "127.0.0.1:0".parse().unwrap(), dir };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(addr) = std::fs::read_to_string(&addr_file).ok().and_then(|a| a.trim().parse().ok()) {
                process.addr = addr;
                return process;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("the gate exited with {status}: {}", process.log());
            }
            assert!(tokio::time::Instant::now() < deadline, "the gate did not listen within 60 s: {}", process.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process's resident memory in KiB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The gate's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gate.log")).unwrap_or_default()
    }
}

impl Drop for GateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
