//! After the request path: one configured receiver, its HTTP client, and a single delivery attempt (sign, POST,
//! classify the answer as delivered, retry or give up).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;

use super::sign::Secret;
use super::{Event, WebhookError};
use crate::config::WebhookConfig;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A configured webhook, ready to deliver.
pub(crate) struct Hook {
    /// `webhook_id` in payloads and logs.
    pub id: String,
    /// The receiver's host, for logs (the URL's path or query may itself be a secret).
    pub host: String,
    url: Uri,
    events: Vec<String>,
    model_name: Option<String>,
    secret: Option<Secret>,
    authorization: Option<HeaderValue>,
    client: Client<Connector, Full<Bytes>>,
}

/// How one attempt ended.
pub(crate) enum Attempt {
    /// The receiver answered 2xx.
    Delivered(StatusCode),
    /// Worth trying again (network error, timeout, 408, 429, 5xx); `retry_after` from the receiver if it said so.
    Retry { reason: String, retry_after: Option<Duration> },
    /// The receiver refused the delivery for good (other statuses).
    GiveUp(String),
}

impl Hook {
    /// Builds the hook `index` from its config, reading its secrets from the environment.
    pub(crate) fn new(
        index: usize,
        config: &WebhookConfig,
        roots: &RootCertStore,
        timeout: Duration,
    ) -> Result<Hook, WebhookError> {
        let key = |k: &str| format!("webhooks[{index}].{k}");
        let secret = match &config.secret_env {
            Some(var) => Some(Secret::new(env(&key("secret_env"), var)?.as_bytes())),
            None => None,
        };
        let authorization = match &config.authorization_env {
            Some(var) => {
                let value = env(&key("authorization_env"), var)?;
                let mut value = HeaderValue::from_str(&value)
                    .map_err(|_| WebhookError::BadHeaderValue { key: key("authorization_env"), var: var.clone() })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let tls = super::tls::client_config(config.verify_tls, roots, config.ca_file.as_deref())
            .map_err(|message| WebhookError::Tls { key: key("ca_file"), message })?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Hook {
            id: config.id.clone(),
            host: config.url.host().unwrap_or_default().to_string(),
            url: config.url.clone(),
            events: config.events.clone(),
            model_name: config.model_name.clone(),
            secret,
            authorization,
            client: Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(https),
        })
    }

    /// Whether this hook subscribes to `event` (its name, and its model when the hook is model-specific).
    pub(crate) fn matches(&self, event: &Event) -> bool {
        self.events.contains(&event.event)
            && self.model_name.as_ref().is_none_or(|m| event.model_name.as_ref() == Some(m))
    }

    /// Whether deliveries carry signatures.
    pub(crate) fn signed(&self) -> bool {
        self.secret.is_some()
    }

    /// One POST of `body`, bounded by `timeout` (connect, headers and a short read of the answer).
    pub(crate) async fn attempt(&self, delivery_id: &str, body: &Bytes, timeout: Duration) -> Attempt {
        let req = match self.request(delivery_id, body) {
            Ok(req) => req,
            Err(e) => return Attempt::GiveUp(format!("cannot build the request: {e}")),
        };
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| error_chain(&e))?;
            let status = resp.status();
            let retry_after = retry_after(resp.headers());
            // Read (and discard) a small answer so the connection can be reused.
            let _ = Limited::new(resp.into_body(), 64 * 1024).collect().await;
            Ok::<_, String>((status, retry_after))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Attempt::Retry { reason: format!("no answer within {timeout:?}"), retry_after: None },
            Ok(Err(reason)) => Attempt::Retry { reason, retry_after: None },
            Ok(Ok((status, retry_after))) => classify(status, retry_after),
        }
    }

    fn request(&self, delivery_id: &str, body: &Bytes) -> Result<Request<Full<Bytes>>, http::Error> {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut req = Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "mlflow-gate")
            .header("x-mlflow-gate-delivery-id", delivery_id)
            .header("x-mlflow-gate-timestamp", timestamp.to_string());
        if let Some(secret) = &self.secret {
            req = req
                .header("x-databricks-signature", secret.databricks(body))
                .header("x-mlflow-gate-signature", secret.gate_v1(delivery_id, timestamp, body));
        }
        if let Some(auth) = &self.authorization {
            req = req.header(http::header::AUTHORIZATION, auth.clone());
        }
        req.body(Full::new(body.clone()))
    }
}

fn classify(status: StatusCode, retry_after: Option<Duration>) -> Attempt {
    if status.is_success() {
        Attempt::Delivered(status)
    } else if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
        Attempt::Retry { reason: format!("HTTP {status}"), retry_after }
    } else {
        Attempt::GiveUp(format!("HTTP {status}"))
    }
}

/// `Retry-After` in seconds (the HTTP-date form is ignored).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let secs = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

fn env(key: &str, var: &str) -> Result<String, WebhookError> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => Err(WebhookError::MissingEnv { key: key.into(), var: var.into() }),
    }
}

/// An error and its causes on one line (hyper's top-level message alone says little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert!(matches!(classify(StatusCode::NO_CONTENT, None), Attempt::Delivered(_)));
        for s in [500, 502, 503, 408, 429] {
            let status = StatusCode::from_u16(s).unwrap();
            assert!(matches!(classify(status, None), Attempt::Retry { .. }), "{s}");
        }
        for s in [301, 400, 401, 403, 404, 410] {
            let status = StatusCode::from_u16(s).unwrap();
            assert!(matches!(classify(status, None), Attempt::GiveUp(_)), "{s}");
        }
    }
}
