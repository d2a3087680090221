//! The end of every failed request: the one place where an error becomes an HTTP response, in MLflow's error JSON
//! (`{"error_code": ..., "message": ...}`) so that MLflow clients raise it with the message intact.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::body::GateBody;

/// What an overloaded gate tells clients to wait before retrying (seconds).
pub const RETRY_AFTER_SECS: &str = "2";

/// The kind (`GateError::kind`) of a request the policy, or the route table, refused: the `decision` of its audit
/// record and metrics, and what the denial webhook reacts to.
pub const DENIED: &str = "denied";

/// Why the gate answered instead of MLflow.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// No usable credentials. The message says what was wrong with them.
    #[error("{0}")]
    Unauthenticated(String),
    /// The policy said no; the message carries the policy's reasons.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request cannot be read unambiguously.
    #[error("{0}")]
    BadRequest(String),
    /// A parameter MLflow would refuse or resolve differently (e.g. an invalid `X-MLFLOW-WORKSPACE`), or one out
    /// of the bounds the gate accepts (e.g. a GraphQL query too deep or too large).
    #[error("{0}")]
    InvalidParameter(String),
    /// The object the request names does not exist: a workflow request the gate serves itself, or a registry or
    /// artifact request whose model, version, run or logged model MLflow says is missing (MLflow's own answer).
    #[error("{0}")]
    NotFound(String),
    /// The request does not fit the object's current state (e.g. approving a request that is not open).
    #[error("{0}")]
    InvalidState(String),
    /// The request body is larger than the gate buffers.
    #[error("request body is larger than the gate's limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The client stopped sending its request body, or sent it too slowly.
    #[error("{0}")]
    BodyTimeout(String),
    /// The gate is at one of its capacity limits (concurrent requests, buffered bytes, heavy evaluations); the
    /// client should retry after `Retry-After` seconds.
    #[error("{0}")]
    Overloaded(String),
    /// The policy could not be evaluated; the request is denied (details only in the log).
    #[error("the policy could not be evaluated, so the request was denied")]
    PolicyFailed,
    /// A look-up the policy needs failed; the request is denied.
    #[error("looking up the registry facts the policy needs failed, so the request was denied; try again shortly")]
    LookupFailed,
    /// The issuer's signing keys are unavailable and none are cached.
    #[error("the token issuer's signing keys are unavailable; try again shortly")]
    KeysUnavailable,
    /// MLflow could not be reached.
    #[error("the MLflow server behind the gate is unavailable")]
    UpstreamUnavailable,
    /// MLflow did not answer in time.
    #[error("the MLflow server behind the gate did not answer in time")]
    UpstreamTimeout,
    /// A fault in the gate itself.
    #[error("internal error in mlflow-gate")]
    Internal,
}

impl GateError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            GateError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            GateError::PermissionDenied(_) | GateError::PolicyFailed => StatusCode::FORBIDDEN,
            GateError::BadRequest(_) | GateError::InvalidParameter(_) | GateError::InvalidState(_) => {
                StatusCode::BAD_REQUEST
            }
            GateError::NotFound(_) => StatusCode::NOT_FOUND,
            GateError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GateError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GateError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            GateError::KeysUnavailable | GateError::LookupFailed => StatusCode::SERVICE_UNAVAILABLE,
            GateError::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            GateError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GateError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// MLflow's `error_code` for this error (MLflow's `ErrorCode` protobuf enum names).
    pub fn error_code(&self) -> &'static str {
        match self {
            GateError::Unauthenticated(_) => "UNAUTHENTICATED",
            GateError::PermissionDenied(_) | GateError::PolicyFailed => "PERMISSION_DENIED",
            GateError::BadRequest(_) => "BAD_REQUEST",
            GateError::InvalidParameter(_) => "INVALID_PARAMETER_VALUE",
            GateError::NotFound(_) => "RESOURCE_DOES_NOT_EXIST",
            GateError::InvalidState(_) => "INVALID_STATE",
            GateError::PayloadTooLarge(_) => "REQUEST_LIMIT_EXCEEDED",
            GateError::BodyTimeout(_) => "DEADLINE_EXCEEDED",
            GateError::KeysUnavailable
            | GateError::LookupFailed
            | GateError::UpstreamUnavailable
            | GateError::Overloaded(_) => "TEMPORARILY_UNAVAILABLE",
            GateError::UpstreamTimeout => "DEADLINE_EXCEEDED",
            GateError::Internal => "INTERNAL_ERROR",
        }
    }

    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GateError::Unauthenticated(_) => "unauthenticated",
            GateError::PermissionDenied(_) => DENIED,
            GateError::BadRequest(_) => "bad_request",
            GateError::InvalidParameter(_) => "invalid_parameter",
            GateError::NotFound(_) => "not_found",
            GateError::InvalidState(_) => "invalid_state",
            GateError::PayloadTooLarge(_) => "too_large",
            GateError::BodyTimeout(_) => "body_timeout",
            GateError::Overloaded(_) => "overloaded",
            GateError::PolicyFailed => "policy_error",
            GateError::KeysUnavailable => "keys_unavailable",
            GateError::LookupFailed => "lookup_failed",
            GateError::UpstreamUnavailable => "upstream_unavailable",
            GateError::UpstreamTimeout => "upstream_timeout",
            GateError::Internal => "internal",
        }
    }

    /// Builds the response. `request_id` is quoted in the message so that a user can hand it to an operator.
    pub fn into_response(self, request_id: &str) -> Response<GateBody> {
        let message = match &self {
            GateError::Unauthenticated(m)
            | GateError::PermissionDenied(m)
            | GateError::BadRequest(m)
            | GateError::InvalidParameter(m)
            | GateError::NotFound(m)
            | GateError::InvalidState(m)
            | GateError::BodyTimeout(m)
            | GateError::Overloaded(m) => {
                format!("mlflow-gate: {m} (request id {request_id})")
            }
            other => format!("mlflow-gate: {other} (request id {request_id})"),
        };
        let body = serde_json::json!({ "error_code": self.error_code(), "message": message });
        let bytes = Bytes::from(body.to_string());
        let mut resp = Response::new(Full::new(bytes).map_err(|never| match never {}).boxed_unsync());
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if matches!(self, GateError::Overloaded(_)) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        if matches!(self, GateError::Unauthenticated(_)) {
            // RFC 6750 section 3. Bearer (not Basic), so browsers do not pop up a password dialog.
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mlflow-gate\", error=\"invalid_token\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn denial_is_mlflow_error_json_with_reason_and_request_id() {
        let resp = GateError::PermissionDenied("only CI may do that".into()).into_response("r-1");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["error_code"], "PERMISSION_DENIED");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(msg.contains("only CI may do that") && msg.contains("r-1"), "{msg}");
    }

    #[tokio::test]
    async fn overload_is_503_temporarily_unavailable_with_retry_after() {
        let resp = GateError::Overloaded("too many requests in flight".into()).into_response("r-3");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some(RETRY_AFTER_SECS));
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["error_code"], "TEMPORARILY_UNAVAILABLE");
    }

    #[test]
    fn unauthenticated_carries_bearer_challenge() {
        let resp = GateError::Unauthenticated("no token".into()).into_response("r-2");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let challenge = resp.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
        assert!(challenge.is_some_and(|c| c.starts_with("Bearer")));
    }
}
