//! Policy, beside the request path: hot reload. The bundle in force sits behind an atomic swap; a background task
//! polls the policy directory's content hash (and listens for SIGHUP), loads, compiles and self-tests a changed
//! bundle off the request path, and swaps it in. A bundle that fails keeps the last good one in force; the failure
//! is logged with its file and line, and counted. Requests keep the bundle they started with.
//!
//! Why polling rather than inotify: it is portable, costs a few small file reads per interval, and sees Kubernetes
//! ConfigMap updates, which swap a `..data` symlink in the mounted directory (the visible files are symlinks
//! through it). inotify watches on the files or the directory miss or misreport such swaps; hashing the resolved
//! contents cannot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::bundle::{fingerprint, Bundle, BundleError};

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The files hash to the revision in force; nothing was compiled or swapped.
    Unchanged,
    /// A new bundle is in force.
    Swapped {
        /// Its revision.
        revision: String,
    },
}

/// Counters of the reloader, for the metrics endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadStats {
    /// Bundles swapped in since start.
    pub reloads: u64,
    /// Reloads refused (unreadable directory, compile error, failed self-test).
    pub reload_failures: u64,
    /// Revision of the bundle in force.
    pub revision: String,
    /// Generation of the bundle in force (unique per load in this process).
    pub generation: u64,
}

/// The bundle in force and the reloader's state.
pub(crate) struct Slot {
    current: ArcSwap<Bundle>,
    reloads: AtomicU64,
    failures: AtomicU64,
    watch: Mutex<WatchState>,
}

/// What the poller remembers between two looks at the directory; the mutex around it also serialises reloads.
#[derive(Default)]
struct WatchState {
    /// A changed hash seen once: loaded when the next poll sees it again (a writer may be half-way through).
    pending: Option<String>,
    /// A hash (or directory error) already reported as a failure: not retried until the files change again.
    reported: Option<String>,
}

impl Slot {
    pub(crate) fn new(bundle: Bundle) -> Slot {
        Slot {
            current: ArcSwap::from_pointee(bundle),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            watch: Mutex::new(WatchState::default()),
        }
    }

    /// The bundle in force, without touching its reference count on the common path.
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<Bundle>> {
        self.current.load()
    }

    pub(crate) fn bundle(&self) -> Arc<Bundle> {
        self.current.load_full()
    }

    pub(crate) fn stats(&self) -> ReloadStats {
        let current = self.current.load();
        ReloadStats {
            reloads: self.reloads.load(Ordering::Relaxed),
            reload_failures: self.failures.load(Ordering::Relaxed),
            revision: current.revision().to_string(),
            generation: current.generation(),
        }
    }

    /// Reloads now if the files changed (SIGHUP, `Policy::reload_now`).
    pub(crate) fn reload(&self, trigger: &'static str) -> Result<Reload, BundleError> {
        let mut state = self.lock();
        self.reload_locked(&mut state, trigger)
    }

    /// One look at the directory: a change is loaded once two consecutive polls see the same content.
    pub(crate) fn poll(&self) {
        let mut state = self.lock();
        let current = self.current.load_full();
        let seen = match fingerprint(current.dir()) {
            Ok(seen) => seen,
            Err(e) => return self.refused(&mut state, e.to_string(), &e, "poll"),
        };
        if seen == current.revision() {
            *state = WatchState::default();
        } else if state.reported.as_deref() == Some(seen.as_str()) {
            // Already refused; the last good bundle stays until the files change again.
        } else if state.pending.as_deref() != Some(seen.as_str()) {
            state.pending = Some(seen);
        } else {
            let _ = self.reload_locked(&mut state, "poll");
        }
    }

    fn reload_locked(&self, state: &mut WatchState, trigger: &'static str) -> Result<Reload, BundleError> {
        state.pending = None;
        let current = self.current.load_full();
        let seen = fingerprint(current.dir()).inspect_err(|e| {
            state.reported = Some(e.to_string());
            self.failed(e, trigger);
        })?;
        if seen == current.revision() {
            return Ok(Reload::Unchanged);
        }
        let loaded = Bundle::load_with(current.dir(), current.entrypoint(), current.eval_timeout(), current.choice());
        let bundle = loaded.inspect_err(|e| {
            state.reported = Some(seen);
            self.failed(e, trigger);
        })?;
        let revision = bundle.revision().to_string();
        tracing::info!(
            trigger,
            %revision,
            previous = current.revision(),
            files = bundle.files().len(),
            engine = bundle.engine_name(),
            "policy bundle reloaded"
        );
        self.current.store(Arc::new(bundle));
        self.reloads.fetch_add(1, Ordering::Relaxed);
        state.reported = None;
        Ok(Reload::Swapped { revision })
    }

    /// Reports a poll failure once per distinct cause.
    fn refused(&self, state: &mut WatchState, key: String, e: &BundleError, trigger: &'static str) {
        if state.reported.as_deref() != Some(key.as_str()) {
            state.reported = Some(key);
            self.failed(e, trigger);
        }
    }

    fn failed(&self, e: &BundleError, trigger: &'static str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let at = match (e.file(), e.line()) {
            (Some(file), Some(line)) => format!("{file}:{line}"),
            (file, _) => file.unwrap_or("-").to_string(),
        };
        tracing::error!(
            trigger,
            at,
            error = %e,
            in_force = %self.current.load().revision(),
            "policy reload failed; the last good bundle stays in force"
        );
    }

    fn lock(&self) -> MutexGuard<'_, WatchState> {
        // The state is two hints; after a panic elsewhere it is still usable.
        self.watch.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Starts the reloader: polls every `interval` (zero: no polling) and reloads on SIGHUP. Must run inside a tokio
/// runtime; the SIGHUP handler is installed before this returns, so a SIGHUP sent afterwards never kills the process.
pub(crate) fn spawn(slot: Arc<Slot>, interval: Duration) -> tokio::task::AbortHandle {
    let hangup = hangup_signal();
    tokio::spawn(watch(slot, interval, hangup)).abort_handle()
}

#[derive(Clone, Copy)]
enum Trigger {
    Poll,
    Hangup,
}

async fn watch(slot: Arc<Slot>, interval: Duration, mut hangup: Option<Hangup>) {
    let mut ticker = (!interval.is_zero()).then(|| {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    loop {
        let trigger = tokio::select! {
            () = next_tick(ticker.as_mut()) => Trigger::Poll,
            () = next_hangup(&mut hangup) => Trigger::Hangup,
        };
        let slot = slot.clone();
        // Reading and compiling is blocking work: keep it off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || match trigger {
            Trigger::Poll => slot.poll(),
            Trigger::Hangup => {
                let _ = slot.reload("SIGHUP");
            }
        })
        .await;
    }
}

async fn next_tick(ticker: Option<&mut tokio::time::Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = std::convert::Infallible;

#[cfg(unix)]
fn hangup_signal() -> Option<Hangup> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; policy reloads come from polling only");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Option<Hangup> {
    None
}

#[cfg(unix)]
async fn next_hangup(signal: &mut Option<Hangup>) {
    if let Some(s) = signal {
        if s.recv().await.is_some() {
            return;
        }
        *signal = None;
    }
    std::future::pending().await
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Option<Hangup>) {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn rego(allow: bool) -> String {
        format!("package mlflow_gate\nimport rego.v1\ndecision := {{\"allow\": {allow}, \"reasons\": []}}\n")
    }

    fn slot(dir: &std::path::Path) -> Slot {
        Slot::new(Bundle::load(dir, "data.mlflow_gate.decision", Duration::from_millis(50)).unwrap())
    }

    #[test]
    fn a_change_loads_once_two_polls_agree_and_a_refusal_is_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.rego");
        std::fs::write(&file, rego(true)).unwrap();
        let slot = slot(dir.path());
        let first = slot.stats();
        std::fs::write(&file, rego(false)).unwrap();
        slot.poll();
        assert_eq!(slot.stats(), first, "the first sight of a change only marks it pending");
        slot.poll();
        assert_eq!(slot.stats().reloads, 1);
        std::fs::write(&file, "package mlflow_gate\ndecision := {").unwrap();
        for _ in 0..5 {
            slot.poll();
        }
        assert_eq!((slot.stats().reloads, slot.stats().reload_failures), (1, 1));
        std::fs::remove_file(&file).unwrap();
        slot.poll();
        slot.poll();
        assert_eq!(slot.stats().reload_failures, 2, "an emptied directory is a refusal too, reported once");
        std::fs::write(&file, rego(true)).unwrap();
        slot.poll();
        slot.poll();
        assert_eq!(slot.stats().reloads, 2);
        assert_eq!(slot.stats().revision, first.revision);
        assert_ne!(slot.stats().generation, first.generation);
    }
}
