//! OTLP trace ingest (`POST /v1/traces`): what the gate reads of it. MLflow turns the root span's attributes
//! `mlflow.traceTag.<key>` into tags of the trace (`SqlAlchemyStore.log_spans`), also on a trace that exists
//! already, so a client could plant or overwrite the gate's reserved tags there (a trace's creator stamp, which
//! gives its creator level). The gate reads the body as MLflow does (protobuf or JSON, after the one
//! `Content-Encoding` MLflow accepts: gzip or deflate) and refuses any attribute key that would become a reserved
//! tag; the body then goes to MLflow byte for byte. A body the gate cannot read the way MLflow would is refused.

use std::io::Read;

use serde_json::Value;

use crate::mlflow::stamps;

/// MLflow's prefix of span attributes that become trace tags.
pub const TRACE_TAG_PREFIX: &str = "mlflow.traceTag.";

/// Why an OTLP body is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum OtlpError {
    /// The body cannot be read as MLflow would read it (400).
    Unreadable(String),
    /// An attribute that would write this reserved tag (403).
    Reserved(String),
}

/// Checks an OTLP export body: `content_type` and `content_encoding` are the request's single headers (MLflow
/// reads one of each), `max_decoded` bounds the decompressed size.
pub fn check(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
    max_decoded: usize,
) -> Result<(), OtlpError> {
    let decoded = decode(content_encoding, body, max_decoded)?;
    let media = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let keys = match media.as_deref() {
        // MLflow answers 400 itself to any other type; nothing it would store can hide behind one.
        Some("application/json") => json_keys(&decoded)?,
        _ => proto_keys(&decoded)?,
    };
    match keys.into_iter().find(|k| reserved_attribute(k)) {
        Some(key) => Err(OtlpError::Reserved(key)),
        None => Ok(()),
    }
}

/// Whether an attribute key would write a reserved tag (or names one itself, which is refused too).
fn reserved_attribute(key: &str) -> bool {
    stamps::is_reserved(key) || key.strip_prefix(TRACE_TAG_PREFIX).is_some_and(stamps::is_reserved)
}

fn decode<'a>(encoding: Option<&str>, body: &'a [u8], max: usize) -> Result<std::borrow::Cow<'a, [u8]>, OtlpError> {
    let encoding = encoding.map(str::to_ascii_lowercase).filter(|e| !e.is_empty());
    let Some(encoding) = encoding else { return Ok(body.into()) };
    let read = |mut r: Box<dyn Read + '_>| -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        (&mut r).take(max as u64 + 1).read_to_end(&mut out)?;
        Ok(out)
    };
    let out = match encoding.as_str() {
        "gzip" => read(Box::new(flate2::read::MultiGzDecoder::new(body))),
        // As MLflow: a zlib stream, else raw deflate.
        "deflate" => read(Box::new(flate2::read::ZlibDecoder::new(body)))
            .or_else(|_| read(Box::new(flate2::read::DeflateDecoder::new(body)))),
        other => {
            return Err(OtlpError::Unreadable(format!("unsupported Content-Encoding {other:?} (gzip or deflate)")))
        }
    }
    .map_err(|e| OtlpError::Unreadable(format!("the {encoding} body cannot be decompressed: {e}")))?;
    if out.len() > max {
        return Err(OtlpError::Unreadable(format!(
            "the body decompresses to more than {max} bytes (server.max_body_bytes)"
        )));
    }
    Ok(out.into())
}

/// Every `key` of an object in the JSON body (attributes are `{"key": ..., "value": ...}` wherever they sit).
fn json_keys(body: &[u8]) -> Result<Vec<String>, OtlpError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| OtlpError::Unreadable(format!("the OTLP JSON body cannot be read: {e}")))?;
    let mut keys = Vec::new();
    let mut stack = vec![&value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(k)) = m.get("key") {
                    keys.push(k.clone());
                }
                stack.extend(m.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    Ok(keys)
}

/// The attribute keys of an `ExportTraceServiceRequest` (opentelemetry-proto trace/v1): those of every resource,
/// scope, span, span event and span link, in every occurrence of each field (protobuf merges repeated
/// occurrences of a message field, so all of them count).
fn proto_keys(body: &[u8]) -> Result<Vec<String>, OtlpError> {
    let mut keys = Vec::new();
    for resource_spans in messages(body, 1)? {
        for resource in messages(resource_spans, 1)? {
            attributes(resource, 1, &mut keys)?;
        }
        for scope_spans in messages(resource_spans, 2)? {
            for scope in messages(scope_spans, 1)? {
                attributes(scope, 3, &mut keys)?;
            }
            for span in messages(scope_spans, 2)? {
                attributes(span, 9, &mut keys)?;
                for event in messages(span, 11)? {
                    attributes(event, 3, &mut keys)?;
                }
                for link in messages(span, 13)? {
                    attributes(link, 4, &mut keys)?;
                }
            }
        }
    }
    Ok(keys)
}

/// The keys of the `KeyValue` messages in field `field` of `msg`.
fn attributes(msg: &[u8], field: u64, keys: &mut Vec<String>) -> Result<(), OtlpError> {
    for kv in messages(msg, field)? {
        for key in messages(kv, 1)? {
            let key =
                std::str::from_utf8(key).map_err(|_| OtlpError::Unreadable("an attribute key is not UTF-8".into()))?;
            keys.push(key.to_string());
        }
    }
    Ok(())
}

/// The length-delimited values of field `wanted` in a protobuf message, in order; the whole message must parse.
fn messages(msg: &[u8], wanted: u64) -> Result<Vec<&[u8]>, OtlpError> {
    let bad = |what: &str| OtlpError::Unreadable(format!("the OTLP protobuf body cannot be read: {what}"));
    let mut found = Vec::new();
    let mut rest = msg;
    while !rest.is_empty() {
        let tag = varint(&mut rest).ok_or_else(|| bad("truncated field tag"))?;
        let (field, wire) = (tag >> 3, tag & 7);
        if field == 0 {
            return Err(bad("field number 0"));
        }
        let skip = match wire {
            0 => {
                varint(&mut rest).ok_or_else(|| bad("truncated varint"))?;
                0
            }
            1 => 8,
            5 => 4,
            2 => {
                let len = varint(&mut rest).ok_or_else(|| bad("truncated length"))?;
                let len = usize::try_from(len).map_err(|_| bad("length out of range"))?;
                let value = rest.get(..len).ok_or_else(|| bad("a field runs past the end"))?;
                if field == wanted {
                    found.push(value);
                }
                len
            }
            _ => return Err(bad("groups or an unknown wire type")),
        };
        rest = rest.get(skip..).ok_or_else(|| bad("a field runs past the end"))?;
    }
    Ok(found)
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
#[path = "otlp_tests.rs"]
mod tests;
