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

/// Why a body could not be buffered.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// More than the limit arrived.
    #[error("body exceeds {0} bytes")]
    TooLarge(usize),
    /// The client's stream broke.
    #[error("reading the request body failed: {0}")]
    Read(BoxError),
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
}
