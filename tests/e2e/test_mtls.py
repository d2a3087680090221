"""Mutual TLS, end to end: certificates refused at the handshake (no HTTP at all), a SPIFFE certificate as an
identity mapped to groups, a token winning over a certificate, and optional client certificates."""

from __future__ import annotations

import json
import ssl


from conftest import poll
from helpers import unique, upstream, upstream_has_experiment
from support.audit import audit_records
from support.client import REQUEST_ID, refused, request, tls_context
from support.ops import gates, mlflow_env  # noqa: F401 (fixtures)
from support.pki import SPIFFE_ID, pki  # noqa: F401 (fixture)


def test_mtls(gates, pki, gate_keys, mlflow_server, mlflow_env):
    tls = {"cert_file": str(pki.server.cert), "key_file": str(pki.server.key),
           "client_ca_file": str(pki.ca.pem), "client_cert_required": True}
    gate = gates("mtls", tls=tls, client_certs={SPIFFE_ID: ["mlflow-ci"], "someone-else": ["mlflow-admin"]},
                 audit={"sink": "file"}, ca=pki.ca.pem, health_cert=pki.spiffe)
    alice = gate_keys.token("alice")

    # No certificate, an expired one, one from a CA the gate does not trust (claiming the mapped SPIFFE ID): no
    # HTTP at all, in TLS 1.2 and 1.3, even with a valid token; nothing reaches MLflow.
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        for label, client, alert in (("no certificate", None, ("CERTIFICATE_REQUIRED", "HANDSHAKE_FAILURE")),
                                     ("expired", pki.expired, ("CERTIFICATE_EXPIRED",)),
                                     ("untrusted CA", pki.rogue, ("UNKNOWN_CA", "BAD_CERTIFICATE"))):
            name = unique("mtls-refused")
            error = refused(gate, tls_context(pki.ca.pem, client, max_version=version), alice, name=name)
            assert any(a in error.upper() for a in alert), f"{label} ({version.name}): {error}"
            assert not upstream_has_experiment(mlflow_server, name), label

    # The SPIFFE certificate without a token: the MLflow client, configured only with certificates, acts as the
    # certificate's identity with its mapped group.
    client = mlflow_env(gate.url, None, server_ca=pki.ca.pem, client_cert=pki.spiffe.combined)
    name = unique("mtls-exp")
    experiment_id = client.create_experiment(name)
    run = client.create_run(experiment_id)
    assert upstream_has_experiment(mlflow_server, name)
    assert upstream(mlflow_server, "/api/2.0/mlflow/runs/get", run_id=run.info.run_id)["run"]["info"]["user_id"] \
        == SPIFFE_ID

    spiffe_ctx = tls_context(pki.ca.pem, pki.spiffe)
    reply = request(gate, "POST", "/api/2.0/mlflow/experiments/create", ctx=spiffe_ctx,
                    json_body={"name": unique("mtls-raw")})
    assert reply.status == 200, reply.body
    spiffe_id = reply.headers[REQUEST_ID]

    # A bearer token wins over the certificate: alice is alice, and a bad token is not rescued by the certificate.
    reply = request(gate, "GET", "/api/2.0/mlflow/experiments/search?max_results=1", alice, ctx=spiffe_ctx)
    assert reply.status == 200, reply.body
    alice_id = reply.headers[REQUEST_ID]
    reply = request(gate, "GET", "/api/2.0/mlflow/experiments/search?max_results=1", "not-a-jwt", ctx=spiffe_ctx)
    assert reply.status == 401, reply.body

    # A valid certificate whose identity is not mapped, without a token: 401, nothing created.
    name = unique("mtls-stranger")
    reply = request(gate, "POST", "/api/2.0/mlflow/experiments/create", ctx=tls_context(pki.ca.pem, pki.stranger),
                    json_body={"name": name})
    assert reply.status == 401, reply.body
    assert reply.json()["error_code"] == "UNAUTHENTICATED"
    stranger_id = reply.headers[REQUEST_ID]
    assert not upstream_has_experiment(mlflow_server, name)

    records = poll(lambda: (r := {x["decision_id"]: x for x in audit_records(gate.audit)})
                   and {spiffe_id, alice_id, stranger_id} <= r.keys() and r, "audit records", log=gate.log)
    assert records[spiffe_id]["principal"] == {"sub": SPIFFE_ID, "groups": ["mlflow-ci"]}
    assert records[spiffe_id]["decision"] == "allow"
    assert records[alice_id]["principal"] == {"sub": "alice", "groups": []}
    assert records[stranger_id]["principal"] is None and records[stranger_id]["decision"] == "unauthenticated"
    # The refused handshakes never became requests.
    assert not any(r["target"] and "mtls-refused" in json.dumps(r["target"]) for r in records.values())


def test_mtls_optional_client_certificate(gates, pki, gate_keys, mlflow_server):
    tls = {"cert_file": str(pki.server.cert), "key_file": str(pki.server.key),
           "client_ca_file": str(pki.ca.pem), "client_cert_required": False}
    gate = gates("mtls-optional", tls=tls, client_certs={SPIFFE_ID: ["mlflow-ci"]}, ca=pki.ca.pem)
    plain = tls_context(pki.ca.pem)

    name = unique("mtls-opt-token")
    reply = request(gate, "POST", "/api/2.0/mlflow/experiments/create", gate_keys.token("alice"), ctx=plain,
                    json_body={"name": name})
    assert reply.status == 200, reply.body
    assert upstream_has_experiment(mlflow_server, name)

    name = unique("mtls-opt-anonymous")
    reply = request(gate, "POST", "/api/2.0/mlflow/experiments/create", ctx=plain, json_body={"name": name})
    assert reply.status == 401, reply.body
    assert not upstream_has_experiment(mlflow_server, name)

    name = unique("mtls-opt-cert")
    reply = request(gate, "POST", "/api/2.0/mlflow/experiments/create", ctx=tls_context(pki.ca.pem, pki.spiffe),
                    json_body={"name": name})
    assert reply.status == 200, reply.body
    assert upstream_has_experiment(mlflow_server, name)

    # Optional does not mean unchecked: a presented certificate must still verify.
    error = refused(gate, tls_context(pki.ca.pem, pki.rogue, max_version=ssl.TLSVersion.TLSv1_2))
    assert "UNKNOWN_CA" in error.upper() or "BAD_CERTIFICATE" in error.upper(), error
