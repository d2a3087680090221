//! After the request path: the delivery task. It takes queued deliveries, runs at most `concurrency` attempts at a
//! time, holds failed ones until their backoff expires, and on shutdown waits (bounded) for attempts in flight.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::hook::{Attempt, Hook};
use super::WebhookStats;
use crate::config::WebhookDeliveryConfig;

/// One delivery of one event to one hook.
pub(crate) struct Job {
    /// Unique within the process (orders retries due at the same instant).
    pub key: u64,
    /// Index into the hooks.
    pub hook: usize,
    pub delivery_id: String,
    pub event: String,
    pub body: Bytes,
    /// Its spool file (`None` if writing it failed).
    pub file: Option<PathBuf>,
    /// Attempts made so far.
    pub attempts: u32,
}

/// Outcome counters.
#[derive(Default)]
pub(crate) struct Counters {
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub dropped: AtomicU64,
    pub pending: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> WebhookStats {
        WebhookStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
        }
    }

    /// Counts a delivery as done (`delivered` or `dropped`).
    pub(crate) fn finished(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        let _ = self.pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1));
    }
}

/// What the delivery task and its attempts share.
pub(crate) struct Shared {
    pub hooks: Vec<Hook>,
    pub settings: WebhookDeliveryConfig,
    pub counters: Counters,
}

#[derive(Default)]
struct Queues {
    ready: VecDeque<Job>,
    waiting: BTreeMap<(Instant, u64), Job>,
    in_flight: JoinSet<Option<(Job, Instant)>>,
}

/// Runs until `stop` changes (or its sender or the queue's sender is dropped).
pub(crate) async fn run(shared: Arc<Shared>, mut queue: mpsc::UnboundedReceiver<Job>, mut stop: watch::Receiver<bool>) {
    let mut q = Queues::default();
    loop {
        while q.in_flight.len() < shared.settings.concurrency {
            let Some(job) = q.ready.pop_front() else { break };
            q.in_flight.spawn(attempt(shared.clone(), job));
        }
        let due = q.waiting.first_key_value().map(|((at, _), _)| *at);
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            job = queue.recv() => match job {
                Some(job) => q.ready.push_back(job),
                None => break,
            },
            Some(done) = q.in_flight.join_next(), if !q.in_flight.is_empty() => match done {
                Ok(Some((job, at))) => {
                    q.waiting.insert((at, job.key), job);
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "a webhook delivery attempt failed to run"),
            },
            () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => q.release_due(),
        }
    }
    drain(q.in_flight, shared.settings.timeout + Duration::from_secs(1)).await;
}

impl Queues {
    fn release_due(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.waiting.first_entry() {
            if entry.key().0 > now {
                break;
            }
            self.ready.push_back(entry.remove());
        }
    }
}

/// Lets attempts in flight finish (each is bounded by the delivery timeout); what remains stays in the spool.
async fn drain(mut in_flight: JoinSet<Option<(Job, Instant)>>, bound: Duration) {
    let finished = tokio::time::timeout(bound, async { while in_flight.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(aborted = in_flight.len(), "webhook attempts still running at shutdown were aborted");
        in_flight.abort_all();
    }
}

/// One attempt; returns the job and when to try again if it should be retried.
async fn attempt(shared: Arc<Shared>, mut job: Job) -> Option<(Job, Instant)> {
    let Some(hook) = shared.hooks.get(job.hook) else {
        tracing::error!(delivery_id = %job.delivery_id, "webhook delivery refers to no configured hook");
        return None;
    };
    job.attempts += 1;
    let outcome = hook.attempt(&job.delivery_id, &job.body, shared.settings.timeout).await;
    let c = &shared.counters;
    let (id, host, delivery_id, event, attempt) = (&hook.id, &hook.host, &job.delivery_id, &job.event, job.attempts);
    match outcome {
        Attempt::Delivered(status) => {
            let status = status.as_u16();
            tracing::info!(webhook_id = %id, %host, %delivery_id, %event, attempt, status, "webhook delivered");
            c.finished(&c.delivered);
        }
        Attempt::GiveUp(reason) => {
            tracing::warn!(webhook_id = %id, %host, %delivery_id, %event, attempt, %reason,
                "webhook receiver refused the delivery; dropped");
            c.failed_attempts.fetch_add(1, Ordering::Relaxed);
            c.finished(&c.dropped);
        }
        Attempt::Retry { reason, retry_after } => {
            c.failed_attempts.fetch_add(1, Ordering::Relaxed);
            if attempt < shared.settings.max_attempts {
                let delay = backoff(&shared.settings, attempt, retry_after);
                tracing::info!(webhook_id = %id, %host, %delivery_id, %event, attempt, %reason,
                    retry_in_ms = delay.as_millis() as u64, "webhook attempt failed; will retry");
                return Some((job, Instant::now() + delay));
            }
            tracing::error!(webhook_id = %id, %host, %delivery_id, %event, attempt, %reason,
                "webhook attempts exhausted; delivery dropped");
            c.finished(&c.dropped);
        }
    }
    if let Some(file) = &job.file {
        super::spool::remove(file).await;
    }
    None
}

/// Full jitter: uniform in `[0, min(max, initial * 2^(attempt-1))]`, but not below the receiver's `Retry-After`
/// (itself capped at `max`).
pub(crate) fn backoff(settings: &WebhookDeliveryConfig, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
    let ceiling = settings.initial_backoff.saturating_mul(factor).min(settings.max_backoff);
    let jittered = Duration::from_millis(rand::rng().random_range(0..=ceiling.as_millis() as u64));
    jittered.max(retry_after.unwrap_or_default().min(settings.max_backoff))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WebhookDeliveryConfig {
        WebhookDeliveryConfig {
            spool_dir: None,
            max_attempts: 12,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_millis(300_000),
            timeout: Duration::from_secs(10),
            concurrency: 4,
        }
    }

    #[test]
    fn backoff_doubles_within_the_cap() {
        let s = settings();
        for _ in 0..200 {
            assert!(backoff(&s, 1, None) <= Duration::from_millis(500));
            assert!(backoff(&s, 3, None) <= Duration::from_millis(2000));
            assert!(backoff(&s, 40, None) <= Duration::from_millis(300_000));
        }
        assert!((0..200).any(|_| backoff(&s, 3, None) > Duration::from_millis(500)), "jitter spans the range");
    }

    #[test]
    fn retry_after_is_a_floor_but_capped() {
        let s = settings();
        assert!(backoff(&s, 1, Some(Duration::from_secs(5))) >= Duration::from_secs(5));
        assert_eq!(backoff(&s, 1, Some(Duration::from_secs(10_000))), Duration::from_millis(300_000));
    }
}
