//! Metrics, beside the request path: counters and latency histograms that the request path updates (a short lock
//! or an atomic add per request) and the admin listener renders in Prometheus' text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 14] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// A latency histogram with fixed buckets. Each observation adds to the one bucket it falls in (one atomic add
/// instead of one per bucket above it: the counters are shared by every worker thread); rendering sums them into
/// Prometheus' cumulative buckets.
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: Default::default(), count: AtomicU64::new(0), sum_nanos: AtomicU64::new(0) }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(count) = BUCKETS.iter().zip(&self.counts).find_map(|(bound, c)| (secs <= *bound).then_some(c)) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let total = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {total}");
    }
}

/// The gate's own metrics.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    would_deny: Mutex<BTreeMap<String, u64>>,
    /// Whole request, as the client sees it.
    pub request_seconds: Histogram,
    /// Token verification.
    pub auth_seconds: Histogram,
    /// Policy evaluation.
    pub policy_seconds: Histogram,
    /// Time until MLflow's response headers.
    pub upstream_seconds: Histogram,
}

/// Counters owned by other parts of the gate, read at scrape time.
#[derive(Debug, Default, Clone)]
pub struct External {
    /// (name, help, value) triples rendered as counters.
    pub counters: Vec<(&'static str, &'static str, u64)>,
    /// (name, help, value) triples rendered as gauges.
    pub gauges: Vec<(&'static str, &'static str, u64)>,
    /// (name, help, label, value): info gauges rendered as `name{label="value"} 1`.
    pub info: Vec<(&'static str, &'static str, &'static str, String)>,
}

impl Metrics {
    /// Counts a finished request.
    pub fn count_request(&self, rpc: &str, decision: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((rpc.to_string(), decision.to_string(), status)).or_insert(0) += 1;
        }
    }

    /// Counts shadow-mode denials that were not enforced.
    pub fn count_would_deny(&self, rpc: &str) {
        if let Ok(mut m) = self.would_deny.lock() {
            *m.entry(rpc.to_string()).or_insert(0) += 1;
        }
    }

    /// Renders everything in Prometheus' text format.
    pub fn render(&self, external: &External) -> String {
        let mut out = String::new();
        out.push_str("# HELP mlflow_gate_requests_total Requests by MLflow operation, decision and status.\n");
        out.push_str("# TYPE mlflow_gate_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((rpc, decision, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "mlflow_gate_requests_total{{operation=\"{}\",decision=\"{}\",status=\"{status}\"}} {n}",
                    escape(rpc),
                    escape(decision)
                );
            }
        }
        out.push_str("# HELP mlflow_gate_would_deny_total Shadow-mode denials not enforced, by operation.\n");
        out.push_str("# TYPE mlflow_gate_would_deny_total counter\n");
        if let Ok(m) = self.would_deny.lock() {
            for (rpc, n) in m.iter() {
                let _ = writeln!(out, "mlflow_gate_would_deny_total{{operation=\"{}\"}} {n}", escape(rpc));
            }
        }
        self.request_seconds.render(&mut out, "mlflow_gate_request_duration_seconds", "Whole request latency.");
        self.auth_seconds.render(&mut out, "mlflow_gate_auth_duration_seconds", "Token verification latency.");
        self.policy_seconds.render(&mut out, "mlflow_gate_policy_duration_seconds", "Policy evaluation latency.");
        self.upstream_seconds.render(
            &mut out,
            "mlflow_gate_upstream_duration_seconds",
            "Time to MLflow's response headers.",
        );
        for (name, help, v) in &external.counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        for (name, help, v) in &external.gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        for (name, help, label, v) in &external.info {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{label}=\"{}\"}} 1", escape(v));
        }
        out
    }
}

/// Renders an info gauge with several labels, `name{a="x",b="y"} 1` (e.g. the latest audit checkpoint).
pub fn render_info(out: &mut String, name: &str, help: &str, labels: &[(&str, &str)]) {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{}}} 1", labels.join(","));
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = Metrics::default();
        m.count_request("GetRun", "allow", 200);
        m.count_request("GetRun", "allow", 200);
        m.count_request("Transition\"X", "deny", 403);
        m.policy_seconds.observe(Duration::from_micros(30));
        m.policy_seconds.observe(Duration::from_millis(30));
        let ext = External {
            counters: vec![("mlflow_gate_jwks_refreshes_total", "JWKS fetches.", 3)],
            gauges: vec![],
            info: vec![("mlflow_gate_policy_bundle_info", "Bundle in force.", "revision", "ab\"c".into())],
        };
        let text = m.render(&ext);
        assert!(text.contains("mlflow_gate_requests_total{operation=\"GetRun\",decision=\"allow\",status=\"200\"} 2"));
        assert!(text.contains("operation=\"Transition\\\"X\""));
        assert!(text.contains("mlflow_gate_policy_duration_seconds_bucket{le=\"0.0001\"} 1"));
        assert!(text.contains("mlflow_gate_policy_duration_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("mlflow_gate_policy_duration_seconds_count 2"));
        assert!(text.contains("mlflow_gate_jwks_refreshes_total 3"));
        assert!(text.contains("mlflow_gate_policy_bundle_info{revision=\"ab\\\"c\"} 1"));
    }

    #[test]
    fn an_info_gauge_carries_every_label_escaped() {
        let mut out = String::new();
        render_info(&mut out, "x_info", "Help.", &[("seq", "7"), ("mac", "a\"b")]);
        assert_eq!(out, "# HELP x_info Help.\n# TYPE x_info gauge\nx_info{seq=\"7\",mac=\"a\\\"b\"} 1\n");
    }
}
