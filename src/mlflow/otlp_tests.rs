use std::io::Write;

use super::*;

const MAX: usize = 1 << 20;

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field(no: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(no << 3 | 2, &mut out);
    varint(value.len() as u64, &mut out);
    out.extend_from_slice(value);
    out
}

fn kv(key: &str) -> Vec<u8> {
    [field(1, key.as_bytes()), field(2, &field(1, b"v"))].concat()
}

/// An ExportTraceServiceRequest with one span carrying `span_attr` and a resource carrying `resource_attr`.
fn request(span_attr: &str, resource_attr: &str) -> Vec<u8> {
    let mut span = field(1, &[7; 16]);
    span.extend(field(5, b"root"));
    span.push(7 << 3); // start_time_unix_nano as a varint (wire type 0 on purpose: skipped)
    varint(1_700_000_000, &mut span);
    span.extend(field(9, &kv(span_attr)));
    let scope_spans = field(2, &field(2, &span));
    let resource = field(1, &field(1, &kv(resource_attr)));
    field(1, &[resource, scope_spans].concat())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

const PROTO: Option<&str> = Some("application/x-protobuf");

#[test]
fn ordinary_trace_tags_and_attributes_pass() {
    let body = request("mlflow.traceTag.team", "service.name");
    assert_eq!(check(PROTO, None, &body, MAX), Ok(()));
}

#[test]
fn a_root_span_attribute_that_would_write_a_reserved_tag_is_refused_in_every_spelling() {
    for key in [
        "mlflow.traceTag.mlflow_gate.created_by",
        "mlflow.traceTag.MLFLOW_GATE.created_by",
        "mlflow.traceTag. mlflow_gate.grant.user.x",
        "mlflow.traceTag.ｍｌｆｌｏｗ_gate.created_by",
        "mlflow_gate.created_by",
    ] {
        let body = request(key, "service.name");
        assert_eq!(check(PROTO, None, &body, MAX), Err(OtlpError::Reserved(key.into())), "{key}");
    }
    let body = request("ok", "mlflow.traceTag.mlflow_gate.created_by");
    assert!(matches!(check(PROTO, None, &body, MAX), Err(OtlpError::Reserved(_))), "resource attributes too");
}

#[test]
fn compressed_bodies_are_read_as_mlflow_reads_them() {
    let bad = request("mlflow.traceTag.mlflow_gate.created_by", "a");
    let good = request("mlflow.traceTag.team", "a");
    for encoding in ["gzip", "GZIP"] {
        assert!(matches!(check(PROTO, Some(encoding), &gzip(&bad), MAX), Err(OtlpError::Reserved(_))));
        assert_eq!(check(PROTO, Some(encoding), &gzip(&good), MAX), Ok(()));
    }
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&bad).unwrap();
    assert!(matches!(check(PROTO, Some("deflate"), &zlib.finish().unwrap(), MAX), Err(OtlpError::Reserved(_))));
    assert!(matches!(check(PROTO, Some("deflate"), &raw_deflate(&bad), MAX), Err(OtlpError::Reserved(_))));
    // Two gzip members decompress to both (as Python's gzip.decompress).
    let two = [gzip(&good), gzip(&bad)].concat();
    assert!(matches!(check(PROTO, Some("gzip"), &two, MAX), Err(OtlpError::Reserved(_))));
}

#[test]
fn unreadable_or_oversized_bodies_are_refused() {
    let good = request("mlflow.traceTag.team", "a");
    assert!(matches!(check(PROTO, Some("br"), &good, MAX), Err(OtlpError::Unreadable(_))));
    assert!(matches!(check(PROTO, Some("gzip"), &good, MAX), Err(OtlpError::Unreadable(_))));
    let bomb = gzip(&vec![0u8; 4 * MAX]);
    assert!(matches!(check(PROTO, Some("gzip"), &bomb, MAX), Err(OtlpError::Unreadable(_))));
    let truncated = &good[..good.len() - 3];
    assert!(matches!(check(PROTO, None, truncated, MAX), Err(OtlpError::Unreadable(_))));
    assert!(matches!(check(PROTO, None, &[0x0b, 0x01], MAX), Err(OtlpError::Unreadable(_))), "a group");
}

#[test]
fn json_bodies_are_checked_after_unescaping() {
    let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"00","attributes":[
        {"key":"mlflow.traceTag.mlflow\u005fgate.created_by","value":{"stringValue":"mallory"}}]}]}]}]}"#;
    let json = Some("application/json; charset=utf-8");
    assert_eq!(check(json, None, body, MAX), Err(OtlpError::Reserved("mlflow.traceTag.mlflow_gate.created_by".into())));
    let fine = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"team","value":{}}]}]}]}]}"#;
    assert_eq!(check(json, None, fine, MAX), Ok(()));
    assert!(matches!(check(json, None, b"{NaN", MAX), Err(OtlpError::Unreadable(_))));
}
