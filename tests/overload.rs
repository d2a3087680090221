//! Overload, benchmark-style, against the real binary (its own multi-threaded runtime, its RSS read from
//! /proc/<pid>/status): while each attack of issue 17 runs, a control request (`/health`) keeps answering within
//! `CONTROL_BOUND` and the gate's RSS stays within a stated bound over its idle baseline; afterwards the gate's
//! timeouts close the attackers' connections. Sizes and durations are bounded (each test runs in ~10 s); the tests
//! run one at a time and print their figures.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::binary::GateProcess;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A control request must answer within this while an attack runs (the issue measured 5-8 s; main before the fix
/// 3.2 s on the big-key attack and nothing within 20 s on the stalled uploads; here 0.01-0.6 s on a loaded machine).
const CONTROL_BOUND: Duration = Duration::from_secs(2);

/// The attack tests measure one gate at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Limits sized for a short test: attackers are cut off after 2 s of silence.
const TEST_LIMITS: &str = "header_read_timeout_secs = 2
body_idle_timeout_secs = 2
body_read_timeout_secs = 6
idle_timeout_secs = 5
max_connections = 96";

async fn start_gate() -> (GateProcess, Recorder, Keys) {
    let upstream = Recorder::start(Behaviour { count_only: true, ..Behaviour::default() }).await;
    let keys = Keys::new();
    let toml = config_toml(upstream.addr, &keys.jwks_path(), &policies_dir(), TEST_LIMITS);
    let gate = GateProcess::start(&toml).await;
    // Warm up: the first requests compile the per-thread policy engines.
    for _ in 0..4 {
        let _ = control(gate.addr).await;
    }
    (gate, upstream, keys)
}

/// One `GET /health` on a new connection; how long it took and whether it was a 200.
async fn control(addr: std::net::SocketAddr) -> (Duration, bool) {
    let started = Instant::now();
    let ok = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        Some(out.starts_with(b"HTTP/1.1 200"))
    };
    let ok = tokio::time::timeout(Duration::from_secs(10), ok).await.ok().flatten().unwrap_or(false);
    (started.elapsed(), ok)
}

/// Samples control latency and RSS every 100 ms until stopped, on its own thread and runtime so that the
/// attackers' tasks in this process do not delay the measurement.
struct Monitor {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Duration, u64, usize, usize)>,
}

impl Monitor {
    #[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
    fn start(gate: &GateProcess) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, rss) = (gate.addr, RssReader::of(gate));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let (mut worst, mut peak, mut samples, mut failures) = (Duration::ZERO, 0, 0, 0);
                while !flag.load(Ordering::Relaxed) {
                    let (took, ok) = control(addr).await;
                    worst = worst.max(took);
                    peak = peak.max(rss.read());
                    samples += 1;
                    failures += usize::from(!ok);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (worst, peak, samples, failures)
            })
        });
        Monitor { stop, thread }
    }

    /// Worst control latency, peak RSS (KiB), samples, failed controls.
    #[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
    fn finish(self) -> (Duration, u64, usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Reads a process's RSS from a task.
struct RssReader(String);

impl RssReader {
    fn of(gate: &GateProcess) -> RssReader {
        RssReader(format!("/proc/{}/status", gate.pid()))
    }
    fn read(&self) -> u64 {
        let status = std::fs::read_to_string(&self.0).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

fn mib(kib: u64) -> u64 {
    kib / 1024
}

fn post_head(path: &str, token: &str, len: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// Sends a whole request (ignoring a gate that stops reading early) and returns its status line.
async fn exchange(addr: std::net::SocketAddr, head: &str, body: &Bytes) -> String {
    let Ok(mut s) = TcpStream::connect(addr).await else { return "connect failed".into() };
    let _ = s.write_all(head.as_bytes()).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), s.write_all(body)).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).lines().next().unwrap_or("no answer").to_string()
}

/// `{"k0":0,"k1":0,...}` of at least `bytes` bytes.
fn many_keys(bytes: usize) -> (Bytes, usize) {
    let mut s = String::with_capacity(bytes + 32);
    s.push('{');
    let mut keys = 0;
    while s.len() < bytes {
        if keys > 0 {
            s.push(',');
        }
        s.push_str(&format!("\"k{keys}\":0"));
        keys += 1;
    }
    s.push('}');
    (Bytes::from(s), keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn big_key_bodies_do_not_stall_health_or_bloat_the_gate() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (gate, upstream, keys) = start_gate().await;
    let token = keys.token("alice", &[]);
    let baseline = gate.rss_kib();
    let (body, n) = many_keys(8 << 20);
    // Under every cap (9 objects of 10,000 keys): parsed and evaluated, in the heavy-work pool.
    let inner: Vec<String> =
        (0..9).map(|i| format!("\"o{i}\":{}", String::from_utf8_lossy(&many_keys(80_000).0))).collect();
    let heavy = Bytes::from(format!("{{\"run_id\":\"r1\",\"extra\":{{{}}}}}", inner.join(",")));
    println!(
        "big keys: {} bytes, {n} keys; heavy legal body {} bytes; baseline RSS {} MiB",
        body.len(),
        heavy.len(),
        mib(baseline)
    );
    let monitor = Monitor::start(&gate);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut attackers = Vec::new();
    for i in 0..6 {
        let (addr, token, body, heavy) = (gate.addr, token.clone(), body.clone(), heavy.clone());
        attackers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while Instant::now() < deadline {
                let (path, body) = match i % 3 {
                    0 => ("/api/2.0/mlflow/runs/search", &body),
                    1 => ("/api/2.0/mlflow/runs/log-batch", &body),
                    _ => ("/api/2.0/mlflow/runs/log-batch", &heavy),
                };
                statuses.push(format!("{path}: {}", exchange(addr, &post_head(path, &token, body.len()), body).await));
            }
            statuses
        }));
    }
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for a in attackers {
        for s in a.await.unwrap() {
            *statuses.entry(s).or_default() += 1;
        }
    }
    let (worst, peak, samples, failures) = monitor.finish();
    println!("answers: {statuses:?}");
    println!(
        "control: worst {worst:?} over {samples} samples ({failures} failed); RSS peak {} MiB (+{} MiB)",
        mib(peak),
        mib(peak.saturating_sub(baseline))
    );
    assert!(worst < CONTROL_BOUND, "/health took {worst:?} during the attack");
    assert_eq!(failures, 0);
    assert!(statuses.keys().any(|s| s.contains("runs/search: HTTP/1.1 413")), "{statuses:?}");
    assert!(statuses.keys().any(|s| s.contains("log-batch: HTTP/1.1 400")), "{statuses:?}");
    assert_eq!(upstream.hits("/api/2.0/mlflow/runs/search"), 0, "no search body reached MLflow");
    // Before the fix: +330 MiB and /health at 3.2 s (debug build, same test).
    assert!(peak.saturating_sub(baseline) < 150 * 1024, "RSS grew by {} MiB", mib(peak - baseline));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_uploads_are_bounded_and_cut_off() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (gate, upstream, keys) = start_gate().await;
    let token = keys.token("alice", &[]);
    let baseline = gate.rss_kib();
    let (total, sent) = (10usize << 20, 9usize << 20);
    println!("stalled uploads: 60 HTTP/1.1 connections + 2 h2 connections x 16 streams, {sent} of {total} bytes each; baseline RSS {} MiB", mib(baseline));
    let monitor = Monitor::start(&gate);
    let started = Instant::now();
    // HTTP/1.1: send 9 MiB of a 10 MiB body, then stall; report what the gate answers (after closing).
    let mut h1 = Vec::new();
    for _ in 0..60 {
        let (addr, head) = (gate.addr, post_head("/api/2.0/mlflow/runs/log-batch", &token, total));
        h1.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b' '; 256 * 1024];
            for _ in 0..sent / chunk.len() {
                match tokio::time::timeout(Duration::from_secs(3), s.write_all(&chunk)).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
            String::from_utf8_lossy(&out).lines().next().unwrap_or("no answer").to_string()
        }));
    }
    // HTTP/2 (prior knowledge): 16 streams per connection, each sending 9 MiB and then stalling.
    let mut h2 = Vec::new();
    for _ in 0..2 {
        let io = hyper_util::rt::TokioIo::new(TcpStream::connect(gate.addr).await.unwrap());
        let (sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        for _ in 0..16 {
            let mut sender = sender.clone();
            let token = token.clone();
            h2.push(tokio::spawn(async move {
                use futures_util::StreamExt;
                let chunk = Bytes::from(vec![b' '; 256 * 1024]);
                let parts = futures_util::stream::iter(
                    (0..sent / chunk.len())
                        .map(move |_| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk.clone()))),
                );
                let body = http_body_util::StreamBody::new(parts.chain(futures_util::stream::pending()));
                let req = http::Request::post("http://gate/api/2.0/mlflow/runs/log-batch")
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .header("content-length", total)
                    .body(body)
                    .unwrap();
                match tokio::time::timeout(Duration::from_secs(20), sender.send_request(req)).await {
                    Ok(Ok(resp)) => format!("h2 {}", resp.status()),
                    Ok(Err(e)) => format!("h2 error {e}"),
                    Err(_) => "h2 no answer".to_string(),
                }
            }));
        }
    }
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for a in h1.into_iter().chain(h2) {
        *answers.entry(a.await.unwrap()).or_default() += 1;
    }
    let cut_off = started.elapsed();
    let (worst, peak, samples, failures) = monitor.finish();
    let after = gate.rss_kib();
    println!("answers after {cut_off:?}: {answers:?}");
    println!(
        "control: worst {worst:?} over {samples} samples ({failures} failed); RSS peak {} MiB (+{} MiB), after {} MiB",
        mib(peak),
        mib(peak.saturating_sub(baseline)),
        mib(after)
    );
    assert!(worst < CONTROL_BOUND, "/health took {worst:?} during the attack");
    assert_eq!(failures, 0);
    // 92 uploads of 9 MiB: the budget of buffered bytes (64 MiB) bounds what the gate holds. Before the fix: +843
    // MiB, and no upload was answered within 20 s.
    assert!(peak.saturating_sub(baseline) < 160 * 1024, "RSS grew by {} MiB", mib(peak - baseline));
    assert!(answers.keys().all(|a| a.contains("503") || a.contains("408")), "{answers:?}");
    assert!(answers.keys().any(|a| a.contains("408")), "the idle timeout cut stalled uploads off: {answers:?}");
    assert_eq!(upstream.hits("/api/2.0/mlflow/runs/log-batch"), 0);
    // The buffers are freed; the allocator keeps part of the memory it grew to.
    assert!(
        after.saturating_sub(baseline) < 128 * 1024,
        "after the attack RSS is still +{} MiB",
        mib(after - baseline)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_flood_is_capped_and_established_connections_keep_working() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (gate, _upstream, _keys) = start_gate().await;
    let baseline = gate.rss_kib();
    // An established keep-alive connection, opened before the flood.
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(gate.addr).await.unwrap());
    let (mut established, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let health =
        || http::Request::get("/health").header("host", "gate").body(http_body_util::Empty::<Bytes>::new()).unwrap();
    assert_eq!(established.send_request(health()).await.unwrap().status(), 200);
    // 400 connections that send half a request head and stall.
    let mut flood = Vec::new();
    for _ in 0..400 {
        let mut s = TcpStream::connect(gate.addr).await.unwrap();
        let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: gate\r\n").await;
        flood.push(s);
    }
    let peak = gate.rss_kib();
    let started = Instant::now();
    let resp = established.send_request(health()).await.unwrap();
    let took = started.elapsed();
    println!(
        "connection flood: 400 stalled heads; control on an established connection took {took:?}; RSS {} MiB (+{} MiB)",
        mib(peak),
        mib(peak.saturating_sub(baseline))
    );
    assert_eq!(resp.status(), 200);
    assert!(took < CONTROL_BOUND, "{took:?}");
    // Over the cap: a 503 in MLflow's error JSON; the others are closed by the header read timeout.
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for mut s in flood {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        let kind = if text.starts_with("HTTP/1.1 503") && text.contains("TEMPORARILY_UNAVAILABLE") {
            "503 over the cap"
        } else if text.is_empty() || text.starts_with("HTTP/1.1 408") {
            "closed by the header read timeout"
        } else {
            "other"
        };
        *answers.entry(kind.to_string()).or_default() += 1;
    }
    println!("flood connections: {answers:?} after {:?}", started.elapsed());
    assert_eq!(answers.get("other"), None, "{answers:?}");
    // 95 slots are free for the flood, so 305 would be refused if it arrived at once; on a busy machine opening 400
    // connections takes longer than the 2 s header timeout, which frees slots that later arrivals take (a run here:
    // 286 refused, 114 timed out). The cap is what bounds it: at most about two rounds of slots are ever accepted.
    assert!(answers.get("503 over the cap").is_some_and(|n| *n >= 400 - 2 * 96), "{answers:?}");
    assert!(peak.saturating_sub(baseline) < 50 * 1024, "RSS grew by {} MiB", mib(peak - baseline));
    let (_, ok) = control(gate.addr).await;
    assert!(ok, "a new connection is served again once the flood is closed");
}
