//! Overload protection, around every request: admission (requests in flight), the budget of buffered request
//! bytes, and the pool that runs CPU-heavy work (parsing and evaluating large bodies) without holding an async
//! worker. The idle timeout of request bodies is a body wrapper (`body.rs`), connections are capped in
//! `server.rs`, and body limits by route class are facts of the route table. Each limit is a `[server]` key (see
//! `config::LoadLimits`).
//!
//! Plain semaphores rather than tower's `ConcurrencyLimit`/`LoadShed`/`Timeout`: shedding needs an immediate
//! `try_acquire` whose refusal is a `GateError` (MLflow's error JSON, from `error.rs`), the slot must live until the
//! response body has been sent (a tower permit ends with the service future), and the timeouts that matter are on
//! the request body (idle between pieces, total for buffered bodies), which a timeout around the whole call cannot
//! express without also cutting off long downloads.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::Budget;
use crate::config::LoadLimits;
use crate::error::GateError;

/// How long a large body may wait for a heavy-work slot before the request is shed.
const HEAVY_WAIT: Duration = Duration::from_secs(10);

/// What one parsed JSON value is reckoned to cost in memory (a `serde_json::Value`, its map entry and key), for
/// the budget of buffered bytes.
pub const PARSED_VALUE_BYTES: usize = 96;

/// Bodies at least this large are parsed and evaluated in the heavy-work pool; smaller ones cost microseconds and
/// run inline.
pub const HEAVY_BODY_BYTES: usize = 64 * 1024;

/// The shared capacity of one gate.
pub struct Capacity {
    limits: LoadLimits,
    requests: Arc<Semaphore>,
    buffered: Budget,
    heavy: Semaphore,
}

impl Capacity {
    /// Capacity for these limits.
    pub fn new(limits: &LoadLimits) -> Capacity {
        Capacity {
            limits: limits.clone(),
            requests: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            buffered: Arc::new(Semaphore::new(limits.max_buffered_body_bytes)),
            heavy: Semaphore::new(limits.max_heavy_evaluations),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &LoadLimits {
        &self.limits
    }

    /// A slot for one request, held until its response has been sent; `Overloaded` when all are taken.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, GateError> {
        self.requests.clone().try_acquire_owned().map_err(|_| {
            GateError::Overloaded(format!(
                "the gate is handling its maximum of {} requests at once (server.max_concurrent_requests); retry shortly",
                self.limits.max_concurrent_requests
            ))
        })
    }

    /// The budget of buffered request-body bytes.
    pub fn buffered(&self) -> &Budget {
        &self.buffered
    }

    /// Adds the estimated memory of a parsed body (`values` JSON values) to its reservation in the budget;
    /// `Overloaded` when the budget cannot hold it.
    pub fn reserve_parsed(&self, reserved: &mut Option<OwnedSemaphorePermit>, values: usize) -> Result<(), GateError> {
        let bytes = values.saturating_mul(PARSED_VALUE_BYTES);
        let permit = u32::try_from(bytes).ok().and_then(|n| self.buffered.clone().try_acquire_many_owned(n).ok());
        let Some(permit) = permit else {
            return Err(GateError::Overloaded(format!(
                "the gate is already holding its maximum of {} bytes of request bodies (server.max_buffered_body_bytes); retry shortly",
                self.limits.max_buffered_body_bytes
            )));
        };
        match reserved.as_mut() {
            Some(r) => r.merge(permit),
            None => *reserved = Some(permit),
        }
        Ok(())
    }

    /// Runs CPU-heavy work. Small work (`heavy` false) runs inline. Heavy work waits for one of
    /// `max_heavy_evaluations` slots, then runs on this thread after handing its async worker role to another
    /// thread (`block_in_place`), so `/health` and every other request keep being served; the thread-local policy
    /// engine of this thread is reused. On a single-threaded runtime (tests) it runs inline.
    pub async fn run_heavy<T>(&self, heavy: bool, work: impl FnOnce() -> T) -> Result<T, GateError> {
        if !heavy {
            return Ok(work());
        }
        let slot = tokio::time::timeout(HEAVY_WAIT, self.heavy.acquire()).await;
        let Ok(Ok(_slot)) = slot else {
            return Err(GateError::Overloaded(format!(
                "the gate is busy evaluating other large request bodies (server.max_heavy_evaluations = {}); retry shortly",
                self.limits.max_heavy_evaluations
            )));
        };
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        Ok(if multi_thread { tokio::task::block_in_place(work) } else { work() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacity(server: &str) -> Capacity {
        let toml = format!(
            "[server]\n{server}\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[[auth.issuers]]\nissuer = \"https://i\"\naudiences = [\"a\"]\nalgorithms = [\"RS256\"]\njwks_file = \"j.json\"\n[policy]\ndir = \"p\"\n"
        );
        match crate::config::Config::parse(&toml, std::path::Path::new("t.toml")) {
            Ok(config) => Capacity::new(&config.server.load),
            Err(e) => panic!("config: {e}"),
        }
    }

    #[tokio::test]
    async fn admission_sheds_when_full_and_recovers() {
        let capacity = capacity("max_concurrent_requests = 1");
        let first = capacity.admit();
        assert!(first.is_ok());
        assert!(matches!(capacity.admit(), Err(GateError::Overloaded(_))));
        drop(first);
        assert!(capacity.admit().is_ok());
    }

    #[test]
    fn parsed_bodies_count_against_the_buffer_budget() {
        let capacity = capacity(&format!("max_buffered_body_bytes = {}", 10 * PARSED_VALUE_BYTES));
        let mut first = None;
        assert!(capacity.reserve_parsed(&mut first, 6).is_ok());
        let mut second = None;
        assert!(matches!(capacity.reserve_parsed(&mut second, 5), Err(GateError::Overloaded(_))));
        assert!(capacity.reserve_parsed(&mut second, 4).is_ok());
        drop(first);
        assert_eq!(capacity.buffered().available_permits(), 6 * PARSED_VALUE_BYTES);
    }
}
