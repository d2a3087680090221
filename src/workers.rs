//! The threads connections are served on, under the accept loop (`server.rs`): one single-threaded tokio runtime
//! per core, each on its own thread, serving the client connections handed to it and keeping its own pool of
//! upstream connections (`proxy`). A request, its upstream hop and their connection tasks then run on one thread:
//! no work stealing and no wake-up of another thread on the way (the shared multi-threaded runtime made 1.35
//! `futex` calls, 0.8 `epoll_wait`s and 1.8 context switches per proxied request at 32 connections; the workers
//! make 0.03, 0.14 and 0.8, with the same 2 `writev` and 2 `recvfrom`). Heavy work leaves the worker for its
//! blocking pool (`limits.rs`), so the worker's other connections keep being served.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

thread_local! {
    /// 1 + the index of the worker this thread belongs to; 0 on every other thread.
    static LANE: Cell<usize> = const { Cell::new(0) };
}

/// The lane of the current thread: 1 + its worker's index on a worker's threads, 0 elsewhere (the main runtime,
/// tests, tools). `proxy::Upstream` keeps one client per lane.
pub fn lane() -> usize {
    LANE.try_with(Cell::get).unwrap_or(0)
}

/// How many workers serve connections: `TOKIO_WORKER_THREADS` when set to a positive number (the variable tokio's
/// own runtime reads), else the cores this process may run on.
pub fn count() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(usize::from).unwrap_or(1))
}

/// The workers of one `server::serve`. Dropping them stops their runtimes (and anything still running on them).
pub struct Workers {
    lanes: Vec<Worker>,
}

struct Worker {
    handle: tokio::runtime::Handle,
    /// Ends the worker's thread (when sent or dropped).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Connections being served on it.
    open: Arc<AtomicUsize>,
}

/// Counts a connection on its worker until it ends.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `n` workers (at least one), each a thread running its own single-threaded runtime.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut lanes = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .thread_name(format!("gate-blocking-{i}"))
                .on_thread_start(move || LANE.with(|l| l.set(i + 1)))
                .enable_all()
                .build()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let handle = runtime.handle().clone();
            std::thread::Builder::new().name(format!("gate-worker-{i}")).spawn(move || {
                LANE.with(|l| l.set(i + 1));
                runtime.block_on(async move {
                    let _ = stopped.await;
                });
                // Whatever still runs there (connections past the drain's grace period) is dropped.
                runtime.shutdown_background();
            })?;
            lanes.push(Worker { handle, stop: Some(stop), open: Arc::new(AtomicUsize::new(0)) });
        }
        Ok(Workers { lanes })
    }

    /// Runs a connection's future on the worker serving the fewest connections.
    pub fn spawn<F>(&self, conn: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self.lanes.iter().min_by_key(|w| w.open.load(Ordering::Relaxed)) else {
            drop(tokio::spawn(conn));
            return;
        };
        worker.open.fetch_add(1, Ordering::Relaxed);
        let open = Open(worker.open.clone());
        drop(worker.handle.spawn(async move {
            let _open = open;
            conn.await;
        }));
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.lanes {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_least_busy_worker_and_run_on_its_lane() {
        let workers = Workers::start(2).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
        for _ in 0..4 {
            let (tx, mut hold) = (tx.clone(), hold_rx.clone());
            workers.spawn(async move {
                let _ = tx.send(lane());
                let _ = hold.wait_for(|done| *done).await;
            });
        }
        let mut lanes = Vec::new();
        for _ in 0..4 {
            lanes.push(rx.recv().await.unwrap());
        }
        lanes.sort_unstable();
        assert_eq!(lanes, [1, 1, 2, 2], "two connections on each worker, each on its own lane");
        assert_eq!(lane(), 0, "the test's own thread is no worker");
        let _ = hold_tx.send(true);
    }
}
