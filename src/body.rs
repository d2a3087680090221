//! Bodies on both sides of the gate: one boxed body type, and bounded buffering for the request bodies the policy
//! must see. Everything else streams.

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
        // What is reserved is the buffer's capacity (it grows by doubling), not only the bytes in it.
        buf.reserve(data.len());
        let held = reserved.as_ref().map_or(0, |r| r.num_permits());
        if buf.capacity() > held {
            let more = u32::try_from(buf.capacity() - held).map_err(|_| CollectError::TooLarge(limit))?;
            let permit = budget.clone().try_acquire_many_owned(more).map_err(|_| CollectError::OverBudget(total))?;
            match reserved.as_mut() {
                Some(r) => r.merge(permit),
                None => reserved = Some(permit),
            }
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf.freeze(), reserved))
}

/// Reads a whole body into memory, failing as soon as more than `limit` bytes arrive (never after buffering them).
pub async fn collect_limited<B>(body: B, limit: usize) -> Result<Bytes, CollectError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(CollectError::TooLarge(limit));
    }
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CollectError::Read(e.into()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(CollectError::TooLarge(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
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
}
