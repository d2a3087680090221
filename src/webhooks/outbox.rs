//! After the request path, for a fleet: pending deliveries live in the PostgreSQL outbox (`fleetdb`) instead of a
//! replica's spool, so a replica that dies leaves nothing behind. A writer task stores what `emit` hands it (the
//! request awaits that, bounded); a delivery task claims due rows under a lease (its own at once, others' on each
//! poll), attempts them as the spool's task does, and deletes, reschedules or gives them up. At shutdown it waits
//! for attempts in flight (bounded) and gives its claims back, so another replica can take them at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinSet;

use super::dispatch::{backoff, Shared};
use super::hook::Attempt;
use crate::config::FleetConfig;
use crate::fleetdb::{Claimed, FleetDb, NewDelivery};

/// A batch of deliveries to store, and who waits for it to be stored.
pub(crate) type Write = (Vec<NewDelivery>, oneshot::Sender<()>);

/// How long a failed insert waits before the next try (doubling up to `MAX_WRITE_RETRY`).
const FIRST_WRITE_RETRY: Duration = Duration::from_millis(100);
const MAX_WRITE_RETRY: Duration = Duration::from_secs(5);

/// What the two tasks share.
pub(crate) struct Outbox {
    pub db: Arc<FleetDb>,
    /// This replica's id (`produced_by` of what it stores).
    pub replica: String,
    /// This process's claims: the replica id and a random suffix (a restarted replica is a new claimer).
    pub claimer: String,
    pub settings: FleetConfig,
    /// Woken when this replica stored something: it is claimed at once, not at the next poll.
    pub wake: Notify,
}

/// Stores batches until `stop`, then what was handed over before it (one try each). A batch that cannot be
/// stored is retried meanwhile (the request stopped waiting after its bound; the batch is kept in memory, and
/// lost only if the process stops first).
pub(crate) async fn write(
    outbox: Arc<Outbox>,
    mut batches: mpsc::UnboundedReceiver<Write>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let next = tokio::select! {
            biased;
            batch = batches.recv() => batch,
            _ = stop.changed() => None,
        };
        let Some((rows, stored)) = next else { break };
        store(&outbox, rows, stored, &stop).await;
    }
    batches.close();
    while let Ok((rows, stored)) = batches.try_recv() {
        store(&outbox, rows, stored, &stop).await;
    }
}

async fn store(outbox: &Outbox, rows: Vec<NewDelivery>, stored: oneshot::Sender<()>, stop: &watch::Receiver<bool>) {
    let mut wait = FIRST_WRITE_RETRY;
    loop {
        match outbox.db.insert_deliveries(&outbox.replica, &rows).await {
            Ok(()) => {
                let _ = stored.send(());
                outbox.wake.notify_one();
                return;
            }
            Err(e) if *stop.borrow() => {
                tracing::error!(error = %e, lost = rows.len(), "webhook deliveries not stored before shutdown; lost");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, deliveries = rows.len(), retry_in_ms = wait.as_millis() as u64,
                    "cannot store webhook deliveries in the fleet database; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_WRITE_RETRY);
            }
        }
    }
}

/// Claims and attempts deliveries until `stop` changes.
pub(crate) async fn deliver(shared: Arc<Shared>, outbox: Arc<Outbox>, mut stop: watch::Receiver<bool>) {
    let hook_ids: Vec<String> = shared.hooks.iter().map(|h| h.id.clone()).collect();
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut claim_failures = 0u32;
    loop {
        let free = shared.settings.concurrency.saturating_sub(in_flight.len());
        if free > 0 && !*stop.borrow() {
            let lease = outbox.settings.lease;
            match outbox.db.claim_deliveries(&outbox.claimer, &hook_ids, lease, free).await {
                Ok(claimed) => {
                    claim_failures = 0;
                    for c in claimed {
                        shared.counters.pending.fetch_add(1, Ordering::Relaxed);
                        in_flight.spawn(attempt(shared.clone(), outbox.clone(), c));
                    }
                }
                Err(e) => {
                    claim_failures += 1;
                    if claim_failures == 1 || claim_failures.is_multiple_of(60) {
                        tracing::error!(error = %e, failures = claim_failures,
                            "cannot claim webhook deliveries from the fleet database");
                    }
                }
            }
        }
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            () = outbox.wake.notified() => {}
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            () = tokio::time::sleep(outbox.settings.poll_interval) => {}
        }
    }
    let bound = shared.settings.timeout + Duration::from_secs(1);
    if tokio::time::timeout(bound, async { while in_flight.join_next().await.is_some() {} }).await.is_err() {
        in_flight.abort_all();
    }
    match outbox.db.release_claims(&outbox.claimer).await {
        Ok(n) if n > 0 => tracing::info!(released = n, "webhook deliveries given back to the fleet at shutdown"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot give back webhook claims; they are retried when the lease ends"),
    }
}

/// One attempt of a claimed delivery, and what the outbox records about it.
async fn attempt(shared: Arc<Shared>, outbox: Arc<Outbox>, c: Claimed) {
    let Some(hook) = shared.hooks.iter().find(|h| h.id == c.webhook_id) else { return };
    let outcome = hook.attempt(&c.delivery_id, &Bytes::from(c.body.clone()), shared.settings.timeout).await;
    let counters = &shared.counters;
    let (id, host, delivery_id, event, attempt) = (&hook.id, &hook.host, &c.delivery_id, &c.event, c.attempts);
    let (db, claimer) = (&outbox.db, outbox.claimer.as_str());
    let stored = match outcome {
        Attempt::Delivered(status) => {
            let status = status.as_u16();
            tracing::info!(webhook_id = %id, %host, %delivery_id, %event, attempt, status, "webhook delivered");
            counters.finished(&counters.delivered);
            db.finish_delivery(claimer, delivery_id).await
        }
        Attempt::GiveUp(reason) => {
            tracing::warn!(webhook_id = %id, %host, %delivery_id, %event, attempt, %reason,
                "webhook receiver refused the delivery; dropped");
            counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
            counters.finished(&counters.dropped);
            db.finish_delivery(claimer, delivery_id).await
        }
        Attempt::Retry { reason, retry_after } => {
            counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
            if attempt < shared.settings.max_attempts {
                let delay = backoff(&shared.settings, attempt, retry_after);
                tracing::info!(webhook_id = %id, %host, %delivery_id, %event, attempt, %reason,
                    retry_in_ms = delay.as_millis() as u64, "webhook attempt failed; will retry");
                let _ = counters.pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1));
                db.retry_delivery(claimer, delivery_id, delay, &reason).await
            } else {
                tracing::error!(webhook_id = %id, %host, %delivery_id, %event, attempt, %reason,
                    "webhook attempts exhausted; delivery dropped");
                counters.finished(&counters.dropped);
                db.finish_delivery(claimer, delivery_id).await
            }
        }
    };
    match stored {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(%delivery_id, "webhook delivery's claim had expired; another replica may repeat it")
        }
        Err(e) => tracing::error!(%delivery_id, error = %e,
            "cannot record the webhook attempt in the fleet database; it is tried again when the lease ends"),
    }
}
