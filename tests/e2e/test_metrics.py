"""The admin listener: Prometheus metrics counting what the gate decided, health, and readiness following MLflow
coming and going."""

from __future__ import annotations

import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from conftest import http_server_on, poll, reserve_port
from helpers import unique, upstream, upstream_has_experiment
from support.client import plain_get, request
from support.ops import gates  # noqa: F401 (fixtures)
from support.prometheus import metric_value, scrape


def test_metrics_and_health(gates, gate_keys, mlflow_server):
    gate = gates("metrics", admin=True)
    alice = gate_keys.token("alice")

    for _ in range(3):
        assert request(gate, "GET", "/api/2.0/mlflow/experiments/search?max_results=1", alice).status == 200
    names = [unique("metrics-exp") for _ in range(2)]
    for name in names:
        assert request(gate, "POST", "/api/2.0/mlflow/experiments/create", alice, json_body={"name": name}).status \
            == 200
    anonymous = unique("metrics-anon")
    for _ in range(2):
        reply = request(gate, "POST", "/api/2.0/mlflow/experiments/create", json_body={"name": anonymous})
        assert reply.status == 401, reply.body
    hook = unique("metrics-hook")
    webhook = {"name": hook, "url": "https://hooks.example/x",
               "events": [{"entity": "registered_model", "action": "created"}]}
    reply = request(gate, "POST", "/api/2.0/mlflow/webhooks", alice, json_body=webhook)
    assert reply.status == 403, reply.body
    assert all(upstream_has_experiment(mlflow_server, n) for n in names)
    assert not upstream_has_experiment(mlflow_server, anonymous)
    hooks = upstream(mlflow_server, "/api/2.0/mlflow/webhooks").get("webhooks", [])
    assert hook not in [h.get("name") for h in hooks]

    samples = scrape(gate)
    requests_total = "mlflow_gate_requests_total"
    assert metric_value(samples, requests_total, operation="SearchExperiments", decision="allow", status="200") == 3
    assert metric_value(samples, requests_total, operation="CreateExperiment", decision="allow", status="200") == 2
    assert metric_value(samples, requests_total, operation="CreateWebhook", decision="denied", status="403") == 1
    assert metric_value(samples, requests_total, decision="unauthenticated", status="401") == 2
    for name, labels, _ in samples:
        if name == requests_total:
            assert set(labels) == {"operation", "decision", "status"}, labels
    counted = metric_value(samples, requests_total)
    histograms = {kind: f"mlflow_gate_{kind}_duration_seconds" for kind in ("request", "auth", "policy", "upstream")}
    count = {kind: metric_value(samples, f"{h}_count") for kind, h in histograms.items()}
    assert count["request"] == counted >= 8  # every request, the readiness probes' /health included
    assert count["auth"] == 8                 # everything that needed credentials
    assert count["policy"] == 6               # what was authenticated reached the policy
    assert count["upstream"] == 5             # what the policy allowed was forwarded
    for kind, h in histograms.items():
        buckets = [(l["le"], v) for n, l, v in samples if n == f"{h}_bucket"]
        assert buckets and buckets[-1] == ("+Inf", count[kind]), (kind, buckets)
        values = [v for _, v in buckets]
        assert values == sorted(values), (kind, buckets)
        assert metric_value(samples, f"{h}_sum") > 0 if count[kind] else True

    with requests.Session() as session:
        session.trust_env = False
        healthz = session.get(f"{gate.admin_url}/healthz", timeout=10)
        readyz = session.get(f"{gate.admin_url}/readyz", timeout=10)
    assert healthz.status_code == 200
    assert readyz.status_code == 200, readyz.text
    assert "upstream: reachable" in readyz.text and "keys: available" in readyz.text, readyz.text
    # The admin listener serves only these: the MLflow API is not reachable through it.
    assert plain_get(f"{gate.admin_url}/api/2.0/mlflow/experiments/search").status_code == 404

    # A gate whose MLflow is down is alive but not ready; readiness follows MLflow coming and going.
    # The port is held by a socket that does not listen yet (connections are refused), so nothing else can take it
    # between now and the moment MLflow "comes back" on it.
    reserved = reserve_port()
    dead_port = reserved.getsockname()[1]
    down = gates("metrics-dead-upstream", admin=True, upstream=f"http://127.0.0.1:{dead_port}", wait_healthy=False)
    readyz = plain_get(f"{down.admin_url}/readyz")
    assert readyz.status_code == 503, readyz.text
    assert "upstream: unreachable" in readyz.text, readyz.text
    assert plain_get(f"{down.admin_url}/healthz").status_code == 200
    reply = request(down, "GET", "/api/2.0/mlflow/experiments/search?max_results=1", alice)
    assert reply.status == 502 and reply.json()["error_code"] == "TEMPORARILY_UNAVAILABLE", reply.body

    stub = stub_mlflow(reserved)
    try:
        poll(lambda: (r := plain_get(f"{down.admin_url}/readyz")) is not None and r.status_code == 200,
             "/readyz once MLflow answers", log=down.log)
    finally:
        stub.shutdown()
        stub.server_close()
    poll(lambda: (r := plain_get(f"{down.admin_url}/readyz")) is not None and r.status_code == 503
         and "upstream: unreachable" in r.text, "/readyz once MLflow is gone again", log=down.log)


def stub_mlflow(sock: socket.socket) -> ThreadingHTTPServer:
    """Something answering MLflow's /health on the bound (not yet listening) socket `sock`, which it takes over."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = b"OK" if self.path == "/health" else b"{}"
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return http_server_on(sock, Handler)
