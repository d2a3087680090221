//! Bodies on both sides of the gate: one boxed body type, bounded buffering for the request bodies the policy must
//! see (within a shared budget of buffered bytes), the idle timeout of request bodies, and response bodies that
//! hold a guard until they are sent. Everything else streams.

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

/// Errors carried inside streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request the gate sends and every response it returns.
pub type GateBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding these bytes.
pub fn full(bytes: impl Into<Bytes>) -> GateBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> GateBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Wraps any streaming body (e.g. hyper's `Incoming`) without buffering it.
pub fn stream<B>(body: B) -> GateBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A streamed body that reports when it has been read to the end (or failed), so that a deadline can start
/// counting only once an upload has been fully sent.
pub struct NotifyOnEnd {
    inner: GateBody,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl NotifyOnEnd {
    /// Wraps `inner`; `done` fires once the body is exhausted.
    pub fn new(inner: GateBody, done: tokio::sync::oneshot::Sender<()>) -> NotifyOnEnd {
        NotifyOnEnd { inner, done: Some(done) }
    }
}

impl Body for NotifyOnEnd {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None) | std::task::Poll::Ready(Some(Err(_)))) {
            if let Some(done) = self.done.take() {
                let _ = done.send(());
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Why a body could not be buffered.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// More than the limit arrived.
    #[error("body exceeds {0} bytes")]
    TooLarge(usize),
    /// The client's stream broke.
    #[error("reading the request body failed: {0}")]
    Read(BoxError),
    /// Buffering this body would take the gate over its budget of buffered request bytes.
    #[error("the gate is already buffering {0} bytes of request bodies")]
    OverBudget(usize),
}

/// Bytes of request bodies held in memory, shared by all requests: a semaphore with one permit per byte.
pub type Budget = std::sync::Arc<tokio::sync::Semaphore>;

/// Reads a whole body into memory like [`collect_limited`], and reserves the buffer's bytes in `budget` as it grows;
/// the reservation (returned with the bytes) must live as long as the bytes or their parsed form. When the budget is
/// spent the read stops at once with [`CollectError::OverBudget`], so many slow bodies cannot add up.
pub async fn collect_reserved<B>(
    body: B,
    limit: usize,
    budget: &Budget,
    total: usize,
) -> Result<(Bytes, Option<tokio::sync::OwnedSemaphorePermit>), CollectError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    collect(body, limit, Some((budget, total))).await
}

/// Reads a whole body into memory, failing as soon as more than `limit` bytes arrive (never after buffering them).
pub async fn collect_limited<B>(body: B, limit: usize) -> Result<Bytes, CollectError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    collect(body, limit, None).await.map(|(bytes, _)| bytes)
}

/// Both of the above: with a `(budget, its total)`, the buffer's capacity is reserved in the budget as it grows.
async fn collect<B>(
    body: B,
    limit: usize,
    budget: Option<(&Budget, usize)>,
) -> Result<(Bytes, Option<tokio::sync::OwnedSemaphorePermit>), CollectError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(CollectError::TooLarge(limit));
    }
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    let mut reserved: Option<tokio::sync::OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CollectError::Read(e.into()))?;
        let Ok(data) = frame.into_data() else { continue };
        if buf.len() + data.len() > limit {
            return Err(CollectError::TooLarge(limit));
        }
        if let Some((budget, total)) = budget {
            // What is reserved is the buffer's capacity (it grows by doubling), not only the bytes in it.
            buf.reserve(data.len());
            let held = reserved.as_ref().map_or(0, |r| r.num_permits());
            if buf.capacity() > held {
                let more = u32::try_from(buf.capacity() - held).map_err(|_| CollectError::TooLarge(limit))?;
                let permit =
                    budget.clone().try_acquire_many_owned(more).map_err(|_| CollectError::OverBudget(total))?;
                match reserved.as_mut() {
                    Some(r) => r.merge(permit),
                    None => reserved = Some(permit),
                }
            }
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf.freeze(), reserved))
}

/// A request body that fails when the client pauses longer than `idle` while the gate waits for the next piece.
/// The clock runs only while the gate is waiting, so a slow upstream (which stops the gate reading) never counts
/// against the client.
pub struct IdleTimeoutBody<B> {
    inner: B,
    idle: std::time::Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    waiting: bool,
}

impl<B> IdleTimeoutBody<B> {
    /// Wraps `inner` (inside a tokio runtime).
    pub fn new(inner: B, idle: std::time::Duration) -> IdleTimeoutBody<B> {
        IdleTimeoutBody { inner, idle, timer: Box::pin(tokio::time::sleep(idle)), waiting: false }
    }
}

/// The error an [`IdleTimeoutBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no part of the request body for {} s (server.body_idle_timeout_secs)", .0.as_secs())]
pub struct BodyIdle(pub std::time::Duration);

impl BodyIdle {
    /// The `BodyIdle` at the root of `error`'s chain of sources, if a stalled client body caused it.
    pub fn in_chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyIdle> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(idle) = e.downcast_ref::<BodyIdle>() {
                return Some(idle);
            }
            current = e.source();
        }
        None
    }
}

impl<B> Body for IdleTimeoutBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if !this.waiting {
            let deadline = tokio::time::Instant::now() + this.idle;
            this.timer.as_mut().reset(deadline);
            this.waiting = true;
        }
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            std::task::Poll::Ready(frame) => {
                this.waiting = false;
                std::task::Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            std::task::Poll::Pending => match std::future::Future::poll(this.timer.as_mut(), cx) {
                std::task::Poll::Ready(()) => {
                    this.waiting = false;
                    std::task::Poll::Ready(Some(Err(Box::new(BodyIdle(this.idle)))))
                }
                std::task::Poll::Pending => std::task::Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
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

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn collect_refuses_bodies_over_the_limit() {
        let ok = collect_limited(full("0123456789"), 10).await;
        assert_eq!(ok.ok(), Some(Bytes::from_static(b"0123456789")));
        let too_big = collect_limited(full("0123456789A"), 10).await;
        assert!(matches!(too_big, Err(CollectError::TooLarge(10))));
    }

    #[tokio::test]
    async fn reserved_bytes_are_returned_when_the_body_is_dropped() {
        let budget: Budget = std::sync::Arc::new(tokio::sync::Semaphore::new(150));
        let first = collect_reserved(full("0".repeat(100)), 1000, &budget, 150).await;
        let held = first.as_ref().ok().and_then(|(_, r)| r.as_ref()).map_or(0, |r| r.num_permits());
        assert!(held >= 100, "{held}");
        assert_eq!(budget.available_permits(), 150 - held);
        let second = collect_reserved(full("0".repeat(100)), 1000, &budget, 150).await;
        assert!(matches!(second, Err(CollectError::OverBudget(150))));
        assert_eq!(budget.available_permits(), 150 - held, "a refused body keeps nothing reserved");
        drop(first);
        assert_eq!(budget.available_permits(), 150);
        assert!(collect_reserved(full("0".repeat(100)), 1000, &budget, 150).await.is_ok());
    }

    #[tokio::test]
    async fn a_stalled_body_fails_after_the_idle_timeout() {
        use futures_util::StreamExt;
        // One piece, then the client stalls with the stream still open.
        let part = futures_util::stream::iter([Ok::<_, BoxError>(http_body::Frame::data(Bytes::from_static(b"part")))]);
        let stalled = http_body_util::StreamBody::new(part.chain(futures_util::stream::pending()));
        let mut timed = IdleTimeoutBody::new(stalled, std::time::Duration::from_millis(200));
        assert!(matches!(timed.frame().await, Some(Ok(_))));
        let second = timed.frame().await;
        let err = second.and_then(|r| r.err()).map(|e| e.is::<BodyIdle>());
        assert_eq!(err, Some(true));
    }
}
