//! Forwarding, the last phase: a permitted request goes to MLflow over a pooled keep-alive client, with the
//! canonical path the policy saw and either the body it evaluated or the client's body streamed unbuffered; the
//! response streams back.

pub mod context;
pub mod headers;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::body::{self, GateBody};
use crate::config::UpstreamConfig;
use crate::error::GateError;
use crate::mlflow::canon::Target;
pub use context::{RequestContext, Workspace};
pub use headers::ClientConn;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// TLS for an `https://` MLflow: the system's roots, plus `ca_file` (PEM) when MLflow's certificate comes from a
/// private CA.
fn client_tls(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?;
            roots.add(cert).map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The MLflow server behind the gate.
pub struct Upstream {
    client: Client<Connector, GateBody>,
    config: UpstreamConfig,
    /// The scheme and authority of `config.url`, parsed once (every request's URI is built from them).
    scheme: http::uri::Scheme,
    authority: Option<http::uri::Authority>,
    host: HeaderValue,
    service_authorization: Option<HeaderValue>,
}

/// What to send as the request body.
pub enum OutBody {
    /// The bytes the policy evaluated (sent with a Content-Length: MLflow's Flask routes read chunked bodies as
    /// empty).
    Evaluated(bytes::Bytes),
    /// The client's body, streamed as it arrives.
    Stream(GateBody),
    /// No body.
    Empty,
}

/// A request ready to forward.
pub struct Outgoing<'a> {
    /// Method.
    pub method: Method,
    /// The client's headers (cleaned here).
    pub headers: &'a http::HeaderMap,
    /// The canonical target.
    pub target: &'a Target,
    /// The client's Host / :authority.
    pub original_host: Option<String>,
    /// The body.
    pub body: OutBody,
    /// The client connection.
    pub conn: &'a ClientConn,
    /// The request's context: its validated workspace replaces the client's header.
    pub context: &'a RequestContext,
}

/// Why one of the gate's own calls to MLflow (look-ups, stamps, workflow state) failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The path does not make a URI with the upstream's base.
    #[error("{path}: not a valid upstream URI")]
    Uri {
        /// The path and query asked for.
        path: String,
        /// Why.
        #[source]
        source: http::Error,
    },
    /// MLflow did not answer within `upstream.timeout_secs`.
    #[error("{path}: MLflow did not answer in time")]
    Timeout {
        /// The path and query asked for.
        path: String,
    },
    /// The request could not be sent, or no response came.
    #[error("{path}: {source}")]
    Request {
        /// The path and query asked for.
        path: String,
        /// The client's error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The response body could not be read, or was over the limit.
    #[error("{path}: reading the response failed: {source}")]
    Read {
        /// The path and query asked for.
        path: String,
        /// The body's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The future of one of the gate's own calls to MLflow (`Upstream::call`).
type BoxedCall<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(http::StatusCode, Bytes), CallError>> + Send + 'a>>;

/// Idle connections kept to MLflow by `Upstream::new` (the gate itself sizes its pool to its request limit).
pub const DEFAULT_IDLE_CONNECTIONS: usize = 64;

impl Upstream {
    /// A pooled client for the configured upstream, keeping up to `DEFAULT_IDLE_CONNECTIONS` idle connections.
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, String> {
        Upstream::with_idle_pool(config, DEFAULT_IDLE_CONNECTIONS)
    }

    /// A pooled client keeping up to `max_idle` idle keep-alive connections to MLflow. The gate passes
    /// `server.max_concurrent_requests`: fewer than the requests it lets run at once would close connections as
    /// they come back to the pool and open new ones on the next burst (a `connect` for one request in ten at 256
    /// client connections with a bound of 64).
    pub fn with_idle_pool(config: &UpstreamConfig, max_idle: usize) -> Result<Upstream, String> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_tls(config.ca_file.as_deref())?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(max_idle)
            .build(https);
        let host = HeaderValue::from_str(&config.host_header).map_err(|e| format!("upstream.host_header: {e}"))?;
        let service_authorization = match &config.service_authorization_env {
            None => None,
            Some(var) => {
                let value =
                    std::env::var(var).map_err(|_| format!("upstream.service_authorization_env: ${var} is not set"))?;
                let mut v = HeaderValue::from_str(&value).map_err(|_| format!("${var} is not a valid header value"))?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let scheme = config.url.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP);
        let authority = config.url.authority().cloned();
        Ok(Upstream { client, config: config.clone(), scheme, authority, host, service_authorization })
    }

    /// Sends a request to MLflow and returns its response (headers cleaned, body streaming).
    pub async fn forward(&self, out: Outgoing<'_>) -> Result<Response<GateBody>, GateError> {
        let uri = self.uri(out.target)?;
        let mut headers = headers::for_upstream(out.headers, out.conn, out.original_host.as_deref(), &self.host);
        out.context.apply_workspace(&mut headers);
        // The deadline counts from the end of the request body: an upload takes as long as it takes.
        let (sent_tx, sent_rx) = tokio::sync::oneshot::channel::<()>();
        let bodiless_read =
            matches!(out.method, Method::GET | Method::HEAD | Method::OPTIONS) && matches!(out.body, OutBody::Empty);
        let body = match out.body {
            OutBody::Evaluated(bytes) => {
                headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                let _ = sent_tx.send(());
                body::full(bytes)
            }
            OutBody::Stream(b) => body::stream(body::NotifyOnEnd::new(b, sent_tx)),
            OutBody::Empty => {
                headers.remove(http::header::CONTENT_LENGTH);
                let _ = sent_tx.send(());
                body::empty()
            }
        };
        // A bodiless read is sent again, once, on a fresh connection when a pooled one fails after the request was
        // written (MLflow's server closed it): it changes nothing in MLflow, as nginx's `proxy_next_upstream error`.
        let (method, original_host) = (out.method.clone(), out.original_host.clone());
        let (client_headers, conn, target, context) = (out.headers, out.conn, out.target, out.context);
        let again = || -> Result<Request<GateBody>, GateError> {
            let mut headers = headers::for_upstream(client_headers, conn, original_host.as_deref(), &self.host);
            context.apply_workspace(&mut headers);
            headers.remove(http::header::CONTENT_LENGTH);
            let mut req = Request::new(body::empty());
            *req.method_mut() = method.clone();
            *req.uri_mut() = self.uri(target)?;
            *req.headers_mut() = headers;
            Ok(req)
        };
        let mut req = Request::new(body);
        *req.method_mut() = out.method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let timeout = self.config.timeout;
        let deadline = async move {
            if sent_rx.await.is_err() {
                // The body was dropped unfinished (the request failed); the request future reports why.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(timeout).await;
        };
        let send = async {
            match self.client.request(req).await {
                Err(e) if bodiless_read && !e.is_connect() => {
                    tracing::warn!(error = %e, "a pooled connection to MLflow failed; sending the read again");
                    match again() {
                        Ok(req) => self.client.request(req).await,
                        Err(_) => Err(e),
                    }
                }
                result => result,
            }
        };
        let resp = tokio::select! {
            r = send => match r {
                Ok(resp) => resp,
                Err(e) => {
                    // A client that stalls mid-upload fails the upstream request: that is the client's timeout.
                    if let Some(idle) = body::BodyIdle::in_chain(&e) {
                        return Err(GateError::BodyTimeout(idle.to_string()));
                    }
                    tracing::warn!(error = %e, connect = e.is_connect(), "forwarding to MLflow failed");
                    return Err(GateError::UpstreamUnavailable);
                }
            },
            () = deadline => return Err(GateError::UpstreamTimeout),
        };
        let (mut parts, incoming) = resp.into_parts();
        headers::for_client(&mut parts.headers);
        Ok(Response::from_parts(parts, body::stream(incoming)))
    }

    fn uri(&self, target: &Target) -> Result<Uri, GateError> {
        self.uri_for(&target.wire_path_and_query()).map_err(|e| {
            tracing::error!(error = %e, "cannot build the upstream URI");
            GateError::Internal
        })
    }

    fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = self.authority.clone();
        parts.path_and_query = Some(http::uri::PathAndQuery::try_from(path_and_query)?);
        Ok(Uri::from_parts(parts)?)
    }

    /// The gate's own JSON call to MLflow (look-ups and stamps), with the configured service credentials, in the
    /// workspace of the request it is made for (and its request id). Returns the status and the parsed body (`null`
    /// when the body is not JSON).
    pub async fn call_json(
        &self,
        ctx: &RequestContext,
        method: Method,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(http::StatusCode, serde_json::Value), CallError> {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, bytes) = self.call(ctx, method, path_and_query, bytes, 16 * 1024 * 1024).await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)))
    }

    /// The gate's own GET of raw bytes from MLflow (artifact files it fingerprints), at most `limit` bytes.
    pub async fn get_bytes(
        &self,
        ctx: &RequestContext,
        path_and_query: &str,
        limit: usize,
    ) -> Result<(http::StatusCode, Bytes), CallError> {
        self.call(ctx, Method::GET, path_and_query, String::new(), limit).await
    }

    /// Boxed: the look-up's future (the client's request, its timeout, the body) is large, and it would otherwise be
    /// stored and copied inline in every future that may call it, on every request, whether it calls it or not.
    fn call<'a>(
        &'a self,
        ctx: &'a RequestContext,
        method: Method,
        path_and_query: &'a str,
        body: String,
        limit: usize,
    ) -> BoxedCall<'a> {
        Box::pin(self.call_unboxed(ctx, method, path_and_query, body, limit))
    }

    async fn call_unboxed(
        &self,
        ctx: &RequestContext,
        method: Method,
        path_and_query: &str,
        body: String,
        limit: usize,
    ) -> Result<(http::StatusCode, Bytes), CallError> {
        let path = || path_and_query.to_string();
        let uri = self.uri_for(path_and_query).map_err(|source| CallError::Uri { path: path(), source })?;
        let mut req = Request::new(body::full(body));
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.insert(http::header::HOST, self.host.clone());
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(http::header::USER_AGENT, HeaderValue::from_static("mlflow-gate"));
        ctx.apply(h);
        if let Some(auth) = &self.service_authorization {
            h.insert(http::header::AUTHORIZATION, auth.clone());
        }
        // A look-up (GET) is sent again, once, when a pooled connection fails after it was written (see `forward`).
        let again = (method == Method::GET).then(|| (req.uri().clone(), req.headers().clone()));
        let send = async {
            match (self.client.request(req).await, again) {
                (Err(e), Some((uri, headers))) if !e.is_connect() => {
                    tracing::warn!(error = %e, "a pooled connection to MLflow failed; sending the look-up again");
                    let mut req = Request::new(body::full(String::new()));
                    *req.uri_mut() = uri;
                    *req.headers_mut() = headers;
                    self.client.request(req).await
                }
                (result, _) => result,
            }
        };
        let resp = tokio::time::timeout(self.config.timeout, send)
            .await
            .map_err(|_| CallError::Timeout { path: path() })?
            .map_err(|source| CallError::Request { path: path(), source })?;
        let status = resp.status();
        let limited = http_body_util::Limited::new(resp.into_body(), limit);
        let bytes = http_body_util::BodyExt::collect(limited)
            .await
            .map_err(|source| CallError::Read { path: path(), source })?
            .to_bytes();
        Ok((status, bytes))
    }
}
