#!/usr/bin/env python3
"""The UI page-load benchmark behind `scripts/bench-ui-pages.sh` (issue 11): the MLflow web UI's initial page loads
(the experiments list, and one experiment's runs page) through the gate with the default bundle, against the same
calls made directly to MLflow, in one run. Budget: through the gate no more than 1.5x direct.

Setup: a real `mlflow server` (the venv's mlflow, sqlite, one worker) and the gate (this build, the repository's
policies) in front of it; through the gate, team A (ana) and team B (ben) each create 25 experiments; ana grants
team B `READ` on some of hers and `NO_PERMISSIONS` on the others, ben grants team A `READ` on his; one of ana's
experiments readable by team B holds 200 runs (metrics, params and tags, logged straight to MLflow in batches). ben
is the viewer.

The calls of a page are those the MLflow 3.17.2 UI sends on first load (recorded from the UI in Chromium, see
PAGES), with the same methods, query strings and bodies; the UI's GETs of its own static files are left out (the
gate serves them like any public route). A page load is replayed as a browser does: every call of the page issued
at once over at most 6 keep-alive connections, timed until the last answer. Rounds alternate direct and gate (after
warm-up rounds, which also fill the gate's permission cache as a UI that polls keeps it filled); the figures are
medians, and the ratio is gate / direct. Nothing here is a test: the figures are printed, not asserted.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_proxy import AUDIENCE, ISSUER, Gate, Procs, free_port, log, wait_http  # noqa: E402

CONNECTIONS = 6  # a browser's connections per host over HTTP/1.1
GRAPHQL_GET_EXPERIMENT = (
    "query MlflowGetExperimentQuery($input: MlflowGetExperimentInput!) @component(name: \"MLflow.ExperimentRunTracking\") "
    "{\n  mlflowGetExperiment(input: $input) {\n    apiError {\n      code\n      message\n      __typename\n    }\n"
    "    experiment {\n      artifactLocation\n      creationTime\n      effectiveTraceArchivalRetention\n"
    "      experimentId\n      lastUpdateTime\n      lifecycleStage\n      name\n      tags {\n        key\n"
    "        value\n        __typename\n      }\n      __typename\n    }\n    __typename\n  }\n}\n")


def pages(experiment_id: str) -> dict[str, list[tuple[str, str, dict | None]]]:
    """What the MLflow 3.17.2 UI sends on first load of each page (method, path with query, JSON body)."""
    shell = [
        ("GET", "/ajax-api/3.0/mlflow/server-info", None),
        ("GET", "/ajax-api/2.0/mlflow/users/current", None),
        ("GET", "/ajax-api/3.0/mlflow/assistant/config", None),
        ("GET", "/ajax-api/3.0/mlflow/assistant/providers", None),
        ("GET", "/ajax-api/3.0/mlflow/assistant/config", None),
        ("GET", "/ajax-api/3.0/mlflow/assistant/providers", None),
    ]
    ids = [experiment_id]
    return {
        "experiments list": shell + [
            ("GET", "/ajax-api/2.0/mlflow/experiments/search?max_results=25&order_by=last_update_time+DESC&filter="
             + urllib.parse.quote_plus("tags.`mlflow.experiment.isGateway` IS NULL"), None),
        ],
        "experiment runs": shell[:1] + [
            ("POST", "/graphql", {"operationName": "MlflowGetExperimentQuery",
                                  "variables": {"input": {"experimentId": experiment_id}},
                                  "query": GRAPHQL_GET_EXPERIMENT}),
            ("POST", "/ajax-api/2.0/mlflow/runs/search", {"experiment_ids": ids, "order_by": [
                "attributes.start_time DESC"], "run_view_type": "ACTIVE_ONLY", "filter": "", "max_results": 50}),
        ] + shell[1:] + [
            ("POST", "/ajax-api/2.0/mlflow/experiments/search-datasets", {"experiment_ids": ids}),
            ("GET", "/ajax-api/2.0/mlflow/gateway-proxy?gateway_path=api%2F2.0%2Fendpoints%2F", None),
            ("POST", "/ajax-api/2.0/mlflow/logged-models/search", {"experiment_ids": ids, "order_by": [
                {"field_name": "creation_time", "ascending": False}]}),
            ("POST", "/ajax-api/2.0/mlflow/runs/search", {"experiment_ids": ids, "run_view_type": "ACTIVE_ONLY",
                                                          "max_results": 100,
                                                          "order_by": ["attributes.start_time DESC"]}),
        ],
    }


class Browser:
    """Up to CONNECTIONS keep-alive connections to one origin, as a browser keeps them."""

    def __init__(self, url: str, token: str | None):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.idle: list[http.client.HTTPConnection] = []
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=CONNECTIONS)

    def call(self, method: str, path: str, body: dict | None) -> tuple[int, int]:
        with self.lock:
            conn = self.idle.pop() if self.idle else http.client.HTTPConnection(self.host, self.port, timeout=60)
        data = json.dumps(body).encode() if body is not None else None
        try:
            conn.request(method, path, body=data, headers=self.headers)
            resp = conn.getresponse()
            size = len(resp.read())
        except (http.client.HTTPException, OSError):
            conn.close()
            raise
        with self.lock:
            self.idle.append(conn)
        return resp.status, size

    def load(self, calls: list) -> tuple[float, list[tuple[int, int]]]:
        """Issues every call of a page at once; the wall time until the last answer, and each (status, bytes)."""
        start = time.perf_counter()
        answers = list(self.pool.map(lambda c: self.call(*c), calls))
        return time.perf_counter() - start, answers

    def close(self) -> None:
        self.pool.shutdown()
        for conn in self.idle:
            conn.close()


def variants(by_page: dict[str, list], direct: Browser, through: Browser) -> dict[str, list]:
    """Each page as the UI sends it; the same page with only the calls that both answer with the same status (the
    default bundle refuses the assistant's endpoints to non-admins, so the gate answers those without asking MLflow,
    which would flatter the gate); and the page's largest call (the search whose results the gate filters) alone."""
    out = {}
    for name, calls in by_page.items():
        _, plain = direct.load(calls)
        _, gated = through.load(calls)
        alike = [c for c, d, g in zip(calls, plain, gated) if d[0] == g[0]]
        largest = max(zip(calls, plain), key=lambda cd: cd[1][1])[0]
        out[f"{name}"] = calls
        out[f"{name}, alike"] = alike
        out[f"{name}, {largest[1].split('?')[0].rsplit('/', 2)[-2]}/{largest[1].split('?')[0].rsplit('/', 1)[-1]}"] = \
            [largest]
    return out


def start_mlflow(procs: Procs, venv: Path, tmp: Path) -> str:
    d = tmp / "mlflow"
    d.mkdir()
    for attempt in range(5):
        port = free_port()
        p = procs.start(f"mlflow-{attempt}", [str(venv / "bin" / "mlflow"), "server", "--host", "127.0.0.1", "--port",
                                              str(port), "--workers", "1", "--backend-store-uri",
                                              f"sqlite:///{d}/mlflow.db", "--serve-artifacts",
                                              "--artifacts-destination", str(d / "art")],
                        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        try:
            wait_http(f"http://127.0.0.1:{port}/health", p, "mlflow server", timeout=180)
            return f"http://127.0.0.1:{port}"
        except SystemExit:
            if p.poll() is None:
                raise
    raise SystemExit("mlflow server did not start")


def token(gate_bin: Path, keys: Path, sub: str, groups: str) -> str:
    return subprocess.run([str(gate_bin), "dev", "token", "--key-dir", str(keys), "--issuer", ISSUER, "--audience",
                           AUDIENCE, "--sub", sub, "--groups", groups, "--ttl", "86400"],
                          check=True, capture_output=True, text=True).stdout.strip()


def seed(gate_url: str, mlflow_url: str, tokens: dict[str, str], experiments: int, runs: int) -> str:
    """Both teams' experiments and grants (through the gate), and the runs of one experiment (straight to MLflow);
    the id of the experiment with the runs."""
    def send(base: str, who: str | None, method: str, path: str, body: dict) -> dict:
        parsed = urllib.parse.urlsplit(base)
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        headers = {"Content-Type": "application/json"}
        if who:
            headers["Authorization"] = f"Bearer {tokens[who]}"
        try:
            conn.request(method, path, body=json.dumps(body).encode(), headers=headers)
            resp = conn.getresponse()
            status, text = resp.status, resp.read()
        finally:
            conn.close()
        if status != 200:
            raise SystemExit(f"seeding: {method} {path} answered {status}: {text[:300]!r}")
        return json.loads(text or b"{}")

    kind = [{"key": "mlflow.experimentKind", "value": "custom_model_development"}]
    owned = {"ana": [], "ben": []}
    for i in range(experiments):
        who = "ana" if i % 2 == 0 else "ben"
        exp = send(gate_url, who, "POST", "/api/2.0/mlflow/experiments/create",
                   {"name": f"bench-{who}-{i}", "tags": kind})["experiment_id"]
        owned[who].append(exp)
        grantee, level = ("team-b", "READ" if i % 4 == 0 else "NO_PERMISSIONS") if who == "ana" else ("team-a", "READ")
        send(gate_url, who, "POST", "/api/2.0/mlflow/experiments/permissions/create",
             {"experiment_id": exp, "group_name": grantee, "permission": level})
    big = owned["ana"][0]  # i == 0: team B may read it
    for start in range(0, runs, 50):
        for j in range(start, min(start + 50, runs)):
            run = send(mlflow_url, None, "POST", "/api/2.0/mlflow/runs/create",
                       {"experiment_id": big, "run_name": f"run-{j}", "start_time": 1_700_000_000_000 + j,
                        "tags": [{"key": "mlflow.user", "value": "ana"}]})["run"]["info"]["run_id"]
            send(mlflow_url, None, "POST", "/api/2.0/mlflow/runs/log-batch", {
                "run_id": run,
                "metrics": [{"key": k, "value": j / runs, "timestamp": 1_700_000_000_000, "step": 0}
                            for k in ("auc", "loss", "f1")],
                "params": [{"key": k, "value": str(j)} for k in ("lr", "depth")],
                "tags": [{"key": "team", "value": "a"}]})
    return big


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gate", required=True, help="the gate binary (a release build)")
    ap.add_argument("--venv", required=True, help="a venv with mlflow")
    ap.add_argument("--policies", default=str(Path(__file__).resolve().parent.parent / "policies"))
    ap.add_argument("--experiments", type=int, default=50)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlflow-gate-bench-ui-"))
    procs = Procs(tmp)
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        keys = tmp / "keys"
        subprocess.run([args.gate, "dev", "keygen", "--dir", str(keys)], check=True, capture_output=True)
        log("starting mlflow server and the gate")
        mlflow_url = start_mlflow(procs, Path(args.venv), tmp)
        gate = Gate(procs, Path(args.gate), tmp, "gate", mlflow_url, keys / "jwks.json", Path(args.policies))
        tokens = {"ana": token(Path(args.gate), keys, "ana", "team-a"),
                  "ben": token(Path(args.gate), keys, "ben", "team-b")}
        log(f"seeding {args.experiments} experiments with grants and {args.runs} runs")
        big = seed(gate.url, mlflow_url, tokens, args.experiments, args.runs)
        direct, through = Browser(mlflow_url, None), Browser(gate.url, tokens["ben"])
        results: dict[str, dict[str, list[float]]] = {}
        statuses: dict[str, dict[str, list]] = {}
        for name, calls in variants(pages(big), direct, through).items():
            times = results.setdefault(name, {"direct": [], "gate": []})
            for rnd in range(args.warmup + args.rounds):
                order = [("direct", direct), ("gate", through)]
                if rnd % 2:
                    order.reverse()
                for label, browser in order:
                    elapsed, answers = browser.load(calls)
                    statuses.setdefault(name, {})[label] = answers
                    if rnd >= args.warmup:
                        times[label].append(elapsed)
            log(f"{name}: {args.rounds} rounds done")
        direct.close()
        through.close()
    finally:
        procs.stop_all()
    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"mlflow-gate UI page-load benchmark, {started}, {os.cpu_count()} CPUs ({cpu}); load average before "
          f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; {args.experiments} experiments (two teams, "
          f"grants), {args.runs} runs in one; viewer ben (team-b), default bundle; {args.rounds} interleaved rounds "
          f"after {args.warmup} warm-up, medians; a page = its calls at once over {CONNECTIONS} keep-alive "
          "connections")
    print(f"{'page':<36} {'calls':>5} {'direct':>10} {'gate':>10} {'ratio':>6}  budget <= 1.5x")
    worst = 0.0
    for name, times in results.items():
        d, g = statistics.median(times["direct"]), statistics.median(times["gate"])
        worst = max(worst, g / d)
        calls = len(statuses[name]["direct"])
        print(f"{name:<36} {calls:>5} {d * 1000:>8.1f}ms {g * 1000:>8.1f}ms {g / d:>5.2f}x  "
              f"{'ok' if g / d <= 1.5 else 'OVER'}")
    for name, by in statuses.items():
        if "," in name:
            continue
        print(f"  {name} (status, bytes) direct: {by['direct']}")
        print(f"  {name} (status, bytes) gate:   {by['gate']}")
    print(f"worst ratio {worst:.2f}x ({'within' if worst <= 1.5 else 'over'} the 1.5x budget)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
