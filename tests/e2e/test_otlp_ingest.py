"""OTLP trace ingest (`POST /v1/traces`) through the gate, against the real MLflow: MLflow turns a root span's
`mlflow.traceTag.<key>` attributes into tags of the trace, also of a trace that exists already, so an engineer could
plant the gate's creator stamp on a colleague's trace (and get its creator's level). The gate reads the body
(protobuf or JSON, gzip) and refuses such attributes; an ordinary export still goes through, byte for byte."""

from __future__ import annotations

import gzip
import http.client as http_client
import json
import os
import uuid
from urllib.parse import urlparse

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from helpers import http, unique


@pytest.fixture(scope="module")
def people(gate_keys) -> dict[str, str]:
    return {"ana": gate_keys.token("ana", groups=["team-a"]), "ben": gate_keys.token("ben", groups=["team-a"])}


@pytest.fixture(scope="module")
def experiment(gate, people) -> str:
    response = http(gate.url, "POST", "/api/2.0/mlflow/experiments/create", people["ana"],
                    json={"name": unique("otlp")})
    assert response.status_code == 200, response.text
    return response.json()["experiment_id"]


def export(trace_hex: str, tags: dict[str, str]) -> bytes:
    """A one-span (root) OTLP export whose span carries `mlflow.traceTag.<key>` attributes."""
    span = Span(trace_id=bytes.fromhex(trace_hex), span_id=os.urandom(8), name="root",
                start_time_unix_nano=1_700_000_000_000_000_000, end_time_unix_nano=1_700_000_001_000_000_000,
                attributes=[KeyValue(key=f"mlflow.traceTag.{k}", value=AnyValue(string_value=v))
                            for k, v in tags.items()])
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])])
    return request.SerializeToString()


def post(gate, token: str, experiment: str, body: bytes, **headers: str):
    return http(gate.url, "POST", "/v1/traces", token, data=body,
                headers={"Content-Type": "application/x-protobuf", "X-Mlflow-Experiment-Id": experiment, **headers})


def trace_tags(mlflow_server, trace_hex: str) -> dict[str, str] | None:
    response = http(mlflow_server.url, "GET", f"/api/3.0/mlflow/traces/tr-{trace_hex}")
    if response.status_code != 200:
        return None
    return response.json()["trace"]["trace_info"].get("tags", {})


def test_an_ordinary_export_goes_through_and_keeps_its_tags(gate, mlflow_server, people, experiment):
    trace = uuid.uuid4().hex
    response = post(gate, people["ana"], experiment, export(trace, {"team": "a"}))
    assert response.status_code == 200, response.text
    assert trace_tags(mlflow_server, trace)["team"] == "a"
    zipped = uuid.uuid4().hex
    response = post(gate, people["ana"], experiment, gzip.compress(export(zipped, {"team": "a"})),
                    **{"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert trace_tags(mlflow_server, zipped)["team"] == "a"


@pytest.mark.parametrize("key", ["mlflow_gate.created_by", "MLFLOW_GATE.created_by", "mlflow_gate.grant.user.ben"])
def test_a_span_attribute_that_would_write_a_reserved_tag_is_refused(gate, mlflow_server, people, experiment, key):
    trace = uuid.uuid4().hex
    assert post(gate, people["ana"], experiment, export(trace, {"team": "a"})).status_code == 200
    before = trace_tags(mlflow_server, trace)
    for body, headers in ((export(trace, {key: "ben"}), {}),
                          (gzip.compress(export(trace, {key: "ben"})), {"Content-Encoding": "gzip"})):
        response = post(gate, people["ben"], experiment, body, **headers)
        assert response.status_code == 403, response.text
        assert response.json()["error_code"] == "PERMISSION_DENIED"
        assert "would write a reserved trace tag" in response.json()["message"], response.text
    assert trace_tags(mlflow_server, trace) == before


def test_a_json_export_is_read_after_unescaping(gate, mlflow_server, people, experiment):
    trace = uuid.uuid4().hex
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": trace, "spanId": os.urandom(8).hex(), "name": "root",
        "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000",
        "attributes": [{"key": "mlflow.traceTag.mlflow\\u005fgate.created_by", "value": {"stringValue": "ben"}}]}]}]}]}
    raw = json.dumps(body).replace("\\\\u005f", "\\u005f").encode()
    response = http(gate.url, "POST", "/v1/traces", people["ben"], data=raw,
                    headers={"Content-Type": "application/json", "X-Mlflow-Experiment-Id": experiment})
    assert response.status_code == 403, response.text
    assert trace_tags(mlflow_server, trace) is None


def test_an_unreadable_body_is_refused_before_mlflow(gate, mlflow_server, people, experiment):
    response = post(gate, people["ana"], experiment, b"\x0b\x01", **{"Content-Encoding": "br"})
    assert response.status_code == 400, response.text
    assert "Content-Encoding" in response.json()["message"]


def test_an_export_needs_edit_on_the_experiment_its_header_names(gate, mlflow_server, people, experiment):
    trace = uuid.uuid4().hex
    refused = post(gate, people["ben"], experiment, export(trace, {"team": "b"}))
    assert refused.status_code == 403, refused.text
    assert "that needs EDIT" in refused.json()["message"], refused.text
    assert trace_tags(mlflow_server, trace) is None
    # Two experiment headers: which one MLflow takes is not the gate's to guess.
    body = export(trace, {})
    conn = http_client.HTTPConnection(urlparse(gate.url).netloc, timeout=30)
    conn.putrequest("POST", "/v1/traces")
    for name, value in (("Authorization", f"Bearer {people['ana']}"), ("Content-Type", "application/x-protobuf"),
                        ("X-Mlflow-Experiment-Id", experiment), ("X-Mlflow-Experiment-Id", "0"),
                        ("Content-Length", str(len(body)))):
        conn.putheader(name, value)
    conn.endheaders(body)
    assert conn.getresponse().status == 400
    conn.close()
    granted = http(gate.url, "POST", "/api/2.0/mlflow/experiments/permissions/create", people["ana"],
                   json={"experiment_id": experiment, "username": "ben", "permission": "EDIT"})
    assert granted.status_code == 200, granted.text
    assert post(gate, people["ben"], experiment, export(trace, {"team": "b"})).status_code == 200
    assert trace_tags(mlflow_server, trace)["team"] == "b"
