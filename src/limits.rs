//! Overload protection, around every request: admission (requests in flight), the budget of buffered request
//! bytes, the idle timeout on request bodies, and the pool that runs CPU-heavy work (parsing and evaluating large
//! bodies) without holding an async worker. Connections are capped in `server.rs`; body limits by route class are
//! facts of the route table. Each limit is a `[server]` key (see `config::LoadLimits`).
//!
//! Plain semaphores rather than tower's `ConcurrencyLimit`/`LoadShed`/`Timeout`: shedding needs an immediate
//! `try_acquire` whose refusal is a `GateError` (MLflow's error JSON, from `error.rs`), the slot must live until the
//! response body has been sent (a tower permit ends with the service future), and the timeouts that matter are on
//! the request body (idle between pieces, total for buffered bodies), which a timeout around the whole call cannot
//! express without also cutting off long downloads.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::{BoxError, Budget, GateBody};
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

/// A request body that fails when the client pauses longer than `idle` while the gate waits for the next piece.
/// The clock runs only while the gate is waiting, so a slow upstream (which stops the gate reading) never counts
/// against the client.
pub struct IdleTimeoutBody<B> {
    inner: B,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    waiting: bool,
}

impl<B> IdleTimeoutBody<B> {
    /// Wraps `inner` (inside a tokio runtime).
    pub fn new(inner: B, idle: Duration) -> IdleTimeoutBody<B> {
        IdleTimeoutBody { inner, idle, timer: Box::pin(tokio::time::sleep(idle)), waiting: false }
    }
}

/// The error an [`IdleTimeoutBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no part of the request body for {} s (server.body_idle_timeout_secs)", .0.as_secs())]
pub struct BodyIdle(pub Duration);

impl<B> Body for IdleTimeoutBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if !this.waiting {
            let deadline = tokio::time::Instant::now() + this.idle;
            this.timer.as_mut().reset(deadline);
            this.waiting = true;
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.waiting = false;
                    Poll::Ready(Some(Err(Box::new(BodyIdle(this.idle)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds something (a request slot, a connection's in-flight mark) until it is sent or
/// dropped.
pub struct Guarded {
    inner: GateBody,
    _guard: Box<dyn std::any::Any + Send>,
}

impl Guarded {
    /// Wraps `inner`, keeping `guard` alive as long as the body.
    pub fn new(inner: GateBody, guard: impl std::any::Any + Send) -> Guarded {
        Guarded { inner, _guard: Box::new(guard) }
    }
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_stalled_body_fails_after_the_idle_timeout() {
        use futures_util::StreamExt;
        // One piece, then the client stalls with the stream still open.
        let part = futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"part")))]);
        let stalled = http_body_util::StreamBody::new(part.chain(futures_util::stream::pending()));
        let mut timed = IdleTimeoutBody::new(stalled, Duration::from_millis(200));
        assert!(matches!(timed.frame().await, Some(Ok(_))));
        let second = timed.frame().await;
        let err = second.and_then(|r| r.err()).map(|e| e.is::<BodyIdle>());
        assert_eq!(err, Some(true));
    }

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
