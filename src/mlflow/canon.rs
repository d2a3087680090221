//! Classification, first step: the one canonical form of a request target. The path is percent-decoded exactly
//! once (as uvicorn does before routing); anything MLflow's stack would resolve differently from a plain reading
//! (`//`, dot segments, `;`, a `%` left after decoding, backslashes, control characters) is refused. The policy
//! sees the decoded path and the upstream receives that same path, re-encoded only where HTTP requires it.

use http::{Uri, Version};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// Characters that must be percent-encoded in a path sent upstream (everything else of the decoded path is sent
/// as is). Non-ASCII is always encoded.
const PATH_ENCODE: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'<').add(b'>').add(b'?').add(b'`').add(b'{').add(b'}');

/// A request target in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The decoded path: what routing and the policy see.
    pub path: String,
    /// The same path as sent upstream.
    pub wire_path: String,
    /// The raw query string (without `?`), forwarded unchanged.
    pub query: Option<String>,
}

impl Target {
    /// Path and query as sent upstream.
    pub fn wire_path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.wire_path),
            None => self.wire_path.clone(),
        }
    }

    /// Query parameters in order, decoded as Werkzeug decodes them (`&` separates, `+` is a space).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .as_deref()
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default()
    }
}

/// Why a target was refused; the message is shown to the client.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[error("the request path {}; send a plain path as MLflow clients do", self.what())]
pub enum CanonError {
    /// An HTTP/1 absolute-form target (`GET http://host/path`).
    AbsoluteForm,
    /// The path does not start with `/`.
    NotAbsolutePath,
    /// A `%` not followed by two hex digits.
    MalformedEscape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
    /// A `%` remains after decoding once.
    DoubleEncoded,
    /// A `\`.
    Backslash,
    /// A control character.
    ControlCharacter,
    /// A `;` (path parameters).
    Parameters,
    /// An encoded `#` or `?`.
    EncodedDelimiter,
    /// An empty segment (`//`).
    EmptySegment,
    /// A `.` or `..` segment.
    DotSegment,
}

impl CanonError {
    fn what(self) -> &'static str {
        match self {
            CanonError::AbsoluteForm => "is in absolute form",
            CanonError::NotAbsolutePath => "does not start with '/'",
            CanonError::MalformedEscape => "has a malformed percent-escape",
            CanonError::NotUtf8 => "is not valid UTF-8 once decoded",
            CanonError::DoubleEncoded => "is percent-encoded more than once",
            CanonError::Backslash => "contains a backslash",
            CanonError::ControlCharacter => "contains control characters",
            CanonError::Parameters => "contains ';' parameters",
            CanonError::EncodedDelimiter => "contains an encoded '#' or '?'",
            CanonError::EmptySegment => "contains an empty segment ('//')",
            CanonError::DotSegment => "contains '.' or '..' segments",
        }
    }
}

/// Canonicalises a request target. HTTP/1 absolute-form targets are refused (MLflow answers 404 to them); for
/// HTTP/2 the URI's scheme and authority are pseudo-headers and only the path is used.
pub fn canonicalize(uri: &Uri, version: Version) -> Result<Target, CanonError> {
    if uri.authority().is_some() && version < Version::HTTP_2 {
        return Err(CanonError::AbsoluteForm);
    }
    let raw = uri.path();
    if !raw.starts_with('/') {
        return Err(CanonError::NotAbsolutePath);
    }
    // Most paths have no escape: decoding would copy them byte by byte to the same string.
    let path = if raw.contains('%') {
        String::from_utf8(decode_strict(raw)?).map_err(|_| CanonError::NotUtf8)?
    } else {
        raw.to_owned()
    };
    check_decoded(&path)?;
    // Borrowed when nothing needs encoding (no formatting machinery per request).
    let wire_path = std::borrow::Cow::<str>::from(utf8_percent_encode(&path, PATH_ENCODE)).into_owned();
    Ok(Target { path, wire_path, query: uri.query().map(str::to_owned) })
}

/// Decodes `%XX` once; a `%` not followed by two hex digits is refused.
fn decode_strict(raw: &str) -> Result<Vec<u8>, CanonError> {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b.get(i) == Some(&b'%') {
            let ok = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit) && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(CanonError::MalformedEscape);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(percent_decode_str(raw).collect())
}

fn check_decoded(path: &str) -> Result<(), CanonError> {
    if path.contains('%') {
        return Err(CanonError::DoubleEncoded);
    }
    if path.contains('\\') {
        return Err(CanonError::Backslash);
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(CanonError::ControlCharacter);
    }
    if path.contains(';') {
        return Err(CanonError::Parameters);
    }
    if path.contains('#') || path.contains('?') {
        return Err(CanonError::EncodedDelimiter);
    }
    if path.contains("//") {
        return Err(CanonError::EmptySegment);
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err(CanonError::DotSegment);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(target: &str) -> Result<Target, CanonError> {
        let uri: Uri = target.parse().map_err(|_| CanonError::NotAbsolutePath)?;
        canonicalize(&uri, Version::HTTP_11)
    }

    #[test]
    fn plain_paths_are_unchanged() {
        let t = canon("/api/2.0/mlflow/registered-models/create").ok();
        assert_eq!(t.as_ref().map(|t| t.path.as_str()), Some("/api/2.0/mlflow/registered-models/create"));
        assert_eq!(t.map(|t| t.wire_path), Some("/api/2.0/mlflow/registered-models/create".into()));
    }

    #[test]
    fn percent_encoded_names_decode_once_like_uvicorn() {
        let t = canon("/api/2.0/mlflow/registered-models%2Fcreate?name=a%20b").ok();
        assert_eq!(t.as_ref().map(|t| t.path.as_str()), Some("/api/2.0/mlflow/registered-models/create"));
        assert_eq!(t.and_then(|t| t.query), Some("name=a%20b".into()));
        let t = canon("/%61pi/2.0/mlflow/runs/get").ok();
        assert_eq!(t.map(|t| t.path), Some("/api/2.0/mlflow/runs/get".into()));
    }

    #[test]
    fn spaces_and_unicode_are_reencoded_on_the_wire() {
        let t = canon("/get-artifact/a%20b/%C3%A9.txt").ok();
        assert_eq!(t.as_ref().map(|t| t.path.as_str()), Some("/get-artifact/a b/é.txt"));
        assert_eq!(t.map(|t| t.wire_path), Some("/get-artifact/a%20b/%C3%A9.txt".into()));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for bad in [
            "//api/2.0/mlflow/registered-models/create",
            "/api//2.0/mlflow/registered-models/create",
            "/api/2.0/mlflow/./registered-models/create",
            "/api/2.0/mlflow/x/../registered-models/create",
            "/api/2.0/mlflow/%2e%2e/registered-models/create",
            "/api/2.0/mlflow/registered-models/create;x=1",
            "/api/2.0/mlflow/registered-models%252Fcreate",
            "/api/2.0/mlflow/registered-models%00create",
            "/api/2.0/mlflow/registered-models%5Ccreate",
            "/api/2.0/mlflow/registered-models%23create",
            "/api/2.0/mlflow/registered-models%3Fcreate",
            "/api/2.0/mlflow/registered-models%zzcreate",
            "/api/2.0/mlflow/%FF",
            "http://evil/api/2.0/mlflow/registered-models/create",
        ] {
            assert!(canon(bad).is_err(), "{bad} should be refused");
        }
    }
}
