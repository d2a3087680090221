#!/usr/bin/env python3
"""The proxy benchmark behind `scripts/bench-proxy.sh`: what the gate costs a user, in one table.

Every figure is measured in this run, on this machine, against baselines measured in the same run (rounds
interleaved, medians reported), because the machines are shared and absolute figures are noise:

* a static upstream (`examples/static_upstream.rs`): direct; nginx as a plain keep-alive reverse proxy; the
  smallest proxy built from the gate's own parts (`examples/hyper_floor.rs`: what the stack costs); the gate
  on a public route (no authentication, no policy: the gate's bare proxy path); the gate with RS256 tokens and the
  default bundle on a read, a search (POST body) and a registry mutation (whose look-ups the static upstream
  answers); the same token repeated and a fresh token per request; HTTP/1.1 keep-alive (wrk) and h2c (h2load);
  1, 32 and 256 connections; p99 added latency at half the gate's saturation rate (h2load --rps); RSS at 256 idle
  keep-alive connections;
* a real `mlflow server` (the venv's mlflow, sqlite, one worker): direct, through the gate, and MLflow's own
  `--app-name basic-auth`, on registry reads and writes;
* a 1 GiB artifact upload and download, direct and through the gate (to the static upstream): the throughput ratio
  and the gate's RSS growth.

Per scenario: requests/s, p50/p99 latency, the gate's CPU time per request (utime+stime from /proc/<pid>/stat
before and after), its peak RSS (VmHWM, reset through /proc/<pid>/clear_refs before each run), and the ratios to
the baselines. The budgets of issue 13 are checked at the end. Nothing here is a test: the figures are printed, not
asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ISSUER, AUDIENCE, SUB = "https://idp.bench", "mlflow", "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
READ = ("GET", "/api/2.0/mlflow/registered-models/get?name=m1", None)
SEARCH = ("POST", "/api/2.0/mlflow/runs/search", '{"experiment_ids":["1"],"max_results":10}')
SETTAG = ("POST", "/api/2.0/mlflow/registered-models/set-tag", '{"name":"m1","key":"team","value":"risk"}')
PUBLIC = ("GET", "/health", None)
ROUTES = {"read": READ, "search": SEARCH, "set-tag": SETTAG, "public": PUBLIC}


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Parsing the load generators' output (covered by tests/e2e/test_bench_parser.py)
# ---------------------------------------------------------------------------------------------------------------

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk_duration(text: str) -> float:
    """`123.45us` / `1.20ms` / `2.00s` -> seconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class Load:
    """One load run's result: requests completed, throughput, latency percentiles (seconds), failures."""
    requests: int
    rps: float
    p50: float
    p99: float
    errors: int = 0
    wrapped: bool = False  # a fresh-token run that ran out of unused tokens (some were repeats)


def parse_wrk(out: str) -> Load:
    """The summary of `wrk --latency` (Requests/sec, the latency distribution, non-2xx and socket errors)."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    pct = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)", out, re.M))
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return Load(requests, rps, wrk_duration(pct["50"]), wrk_duration(pct["99"]), errors)


def parse_h2load(out: str, log_lines: list[str]) -> Load:
    """h2load's summary (req/s, succeeded/failed) and its --log-file lines (start, status, duration in us)."""
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
                  r"(\d+) timeout", out)
    done, succeeded = int(m.group(2)), int(m.group(3))
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    errors = done - succeeded + (int(codes.group(3)) + int(codes.group(4)) if codes else 0)
    times = sorted(int(line.split("\t")[2]) * 1e-6 for line in log_lines if line.count("\t") >= 2)
    return Load(done, rps, percentile(times, 50), percentile(times, 99), errors)


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p / 100))]


def proc_cpu_seconds(stat: str) -> float:
    """utime + stime of a /proc/<pid>/stat line, in seconds (the comm field may hold spaces)."""
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_kib(status: str, key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) if m else 0


@dataclass
class Row:
    """One line of the table: the medians over rounds."""
    name: str
    proto: str
    conns: int | str
    loads: list[Load] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    vs: dict[str, str] = field(default_factory=dict)  # label -> baseline row key
    note: str = ""

    def key(self) -> str:
        return f"{self.name}|{self.proto}|{self.conns}"

    def med(self, attr: str) -> float:
        values = [getattr(x, attr) for x in self.loads]
        return statistics.median(values) if values else float("nan")


def fmt_time(s: float) -> str:
    if s != s:  # nan
        return "-"
    return f"{s * 1e3:.2f}ms" if s >= 1e-3 else f"{s * 1e6:.0f}us"


def render(rows: list[Row], header: str) -> str:
    """The one table: per scenario the medians, the gate's CPU and RSS, and the ratios to its baselines."""
    by_key = {r.key(): r for r in rows}
    cols = f"{'scenario':<38} {'proto':<5} {'conns':>5} {'req/s':>9} {'p50':>8} {'p99':>8} {'CPU/req':>8} " \
           f"{'RSS MiB':>7} {'errors':>6}  ratios (throughput, same run)"
    lines = [header, cols, "-" * len(cols)]
    for r in rows:
        if not r.loads:
            lines.append(f"{r.name:<38} {r.proto:<5} {r.conns!s:>5}  (not run) {r.note}")
            continue
        cpu = f"{statistics.median(r.cpu_us):.0f}us" if r.cpu_us else "-"
        rss = f"{max(r.rss_mib):.1f}" if r.rss_mib else "-"
        ratios = []
        for label, base_key in r.vs.items():
            base = by_key.get(base_key)
            if base and base.loads and base.med("rps") > 0:
                ratios.append(f"{r.med('rps') / base.med('rps'):.2f}x {label}")
        errors = sum(x.errors for x in r.loads)
        lines.append(f"{r.name:<38} {r.proto:<5} {r.conns!s:>5} {r.med('rps'):>9.0f} {fmt_time(r.med('p50')):>8} "
                     f"{fmt_time(r.med('p99')):>8} {cpu:>8} {rss:>7} {errors:>6}  {', '.join(ratios)}"
                     + (f"  {r.note}" if r.note else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------------------------

class Procs:
    """Every process this run starts, stopped (by its own pid) at the end."""

    def __init__(self, tmp: Path):
        self.tmp, self.procs = tmp, []

    def start(self, name: str, cmd: list[str], env: dict | None = None, cpus: str | None = None,
              discard: bool = False) -> subprocess.Popen:
        logf = open(os.devnull if discard else self.tmp / f"{name}.log", "wb")
        if cpus and shutil.which("taskset"):
            cmd = ["taskset", "-c", cpus, *cmd]
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                             start_new_session=True)
        self.procs.append((name, p))
        return p

    def stop_all(self) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _, p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def wait_file(path: Path, proc: subprocess.Popen, what: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}; see its log in {path.parent}")
        time.sleep(0.05)
    raise SystemExit(f"{what} did not start within {timeout} s")


def wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    import urllib.request
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not answer {url} within {timeout} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --discard-gate-logs: the gates' log lines (one per request, about 400 bytes: gigabytes over a full run) go to
# /dev/null instead of a file in the run's directory. They are still formatted and written.
DISCARD_GATE_LOGS = False


class Gate:
    def __init__(self, procs: Procs, binary: Path, tmp: Path, name: str, upstream: str, jwks: Path, policies: Path):
        d = tmp / name
        d.mkdir()
        cfg = d / "gate.toml"
        cfg.write_text(f"""[server]
listen = "127.0.0.1:0"
max_connections = 2048
max_concurrent_requests = 1024
[upstream]
url = "{upstream}"
[[auth.issuers]]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["RS256"]
jwks_file = "{jwks}"
[policy]
dir = "{policies}"
""")
        addr = d / "addr"
        self.proc = procs.start(name, [str(binary), "serve", "--config", str(cfg), "--addr-file", str(addr)],
                                env={"MLFLOW_GATE_LOG": os.environ.get("MLFLOW_GATE_LOG", "info")},
                                discard=DISCARD_GATE_LOGS)
        self.url = "http://" + wait_file(addr, self.proc, name)
        wait_http(self.url + "/health", self.proc, name)

    def cpu(self) -> float:
        return proc_cpu_seconds(Path(f"/proc/{self.proc.pid}/stat").read_text())

    def status(self) -> str:
        return Path(f"/proc/{self.proc.pid}/status").read_text()

    def reset_peak(self) -> None:
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError:
            pass


def nginx_conf(tmp: Path, upstream: str) -> Path:
    """nginx as a plain keep-alive reverse proxy (what a user would put in front of MLflow), h1 and h2c."""
    d = tmp / "nginx"
    d.mkdir()
    port_file = d / "port"
    port = free_port()
    host, up_port = upstream.removeprefix("http://").split(":")
    conf = d / "nginx.conf"
    conf.write_text(f"""worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  # nginx closes a keep-alive connection (h1 and h2) after 1,000 requests by default; h2load does not reconnect
  # (its h2c row read 0 req/s once a run got past 32,000 requests in the warm-up), and the gate sets no such limit.
  keepalive_requests 1000000;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  upstream app {{ server {host}:{up_port}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; client_max_body_size 0; proxy_request_buffering off; proxy_buffering off; }}
  }}
  server {{
    listen 127.0.0.1:{port + 1 if port < 65000 else port - 1} http2;
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; }}
  }}
}}
""")
    port_file.write_text(str(port))
    return conf


# ---------------------------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------------------------

class Loader:
    def __init__(self, tmp: Path, duration: float, tokens_file: Path | None, token: str):
        self.tmp, self.duration, self.tokens_file, self.token = tmp, duration, tokens_file, token
        self.n = 0
        # Fresh tokens are never reused across runs either: each run starts after the last one's tokens.
        self.fresh_offset, self.fresh_count = 0, 0
        if tokens_file and tokens_file.exists():
            self.fresh_count = sum(1 for _ in tokens_file.open())

    def lua(self, route: tuple, auth: str, threads: int = 1) -> Path:
        """A wrk script for the route: its method, path and body, and the token (the same one, or for "fresh" the
        next unused one of the minted list per request: thread t of n sends tokens t, t+n, t+2n, ...)."""
        method, path, body = route
        self.n += 1
        f = self.tmp / f"wrk-{self.n}.lua"
        lines = [f'wrk.method = "{method}"', f'wrk.path = "{path}"']
        if body:
            lines += [f"wrk.body = [[{body}]]", 'wrk.headers["Content-Type"] = "application/json"']
        if auth == "same":
            lines.append(f'wrk.headers["Authorization"] = "Bearer {self.token}"')
        elif auth == "fresh":
            lines += [
                "local counter = 0",
                "function setup(thread) counter = counter + 1; thread:set('tid', counter) end",
                "function init(args)",
                f"  tokens = {{}}; for l in io.lines('{self.tokens_file}') do tokens[#tokens + 1] = l end",
                f"  i = {self.fresh_offset} + tid - {threads}",
                "end",
                "function request()",
                f"  i = i + {threads}; if i > #tokens then i = ((i - 1) % #tokens) + 1 end",
                "  wrk.headers['Authorization'] = 'Bearer ' .. tokens[i]",
                "  return wrk.format()",
                "end",
            ]
        f.write_text("\n".join(lines) + "\n")
        return f

    def wrk(self, url: str, route: tuple, conns: int, auth: str, extra_header: str | None = None) -> Load:
        threads = 1 if conns == 1 else 2
        script = self.lua(route, auth, threads)
        if extra_header:
            name, value = extra_header.split(": ", 1)
            script.write_text(script.read_text() + f'wrk.headers["{name}"] = "{value}"\n')
        cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(self.duration))}s", "--latency",
               "--timeout", "30s", "-s", str(script), url]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=self.duration + 60)
        try:
            load = parse_wrk(done.stdout)
            if auth == "fresh":
                load.wrapped = self.fresh_offset + load.requests > self.fresh_count
                self.fresh_offset = (self.fresh_offset + load.requests) % max(self.fresh_count, 1)
            return load
        except (AttributeError, KeyError) as e:
            raise SystemExit(f"cannot read wrk's output ({e}): {done.stdout}{done.stderr}") from e

    def h2load(self, url: str, route: tuple, conns: int, auth: str, h1: bool = False, rps: float | None = None) -> Load:
        method, path, body = route
        self.n += 1
        logf = self.tmp / f"h2load-{self.n}.log"
        cmd = ["h2load", f"-c{conns}", f"-t{1 if conns == 1 else 2}", "-m1", f"--log-file={logf}",
               f"-D{max(1, int(self.duration))}", "--warm-up-time=1"]
        if h1:
            cmd.append("--h1")
        if rps:
            cmd.append(f"--rps={rps / conns:.2f}")
        if auth == "same":
            cmd += ["-H", f"authorization: Bearer {self.token}"]
        if body:
            bf = self.tmp / f"body-{self.n}.json"
            bf.write_text(body)
            cmd += ["-d", str(bf), "-H", "content-type: application/json"]
        done = subprocess.run(cmd + [url + path], capture_output=True, text=True, timeout=self.duration + 60)
        lines = logf.read_text().splitlines() if logf.exists() else []
        try:
            return parse_h2load(done.stdout, lines)
        except (AttributeError, KeyError) as e:
            raise SystemExit(f"cannot read h2load's output ({e}): {done.stdout}{done.stderr}") from e


class Floor:
    """`examples/hyper_floor.rs`: the smallest proxy built from the gate's parts (Tokio, hyper-util's server and
    pooled client), nothing else; measured like a gate (CPU per request, peak RSS)."""

    def __init__(self, procs: Procs, binary: Path, tmp: Path, upstream: str):
        addr = tmp / "floor.addr"
        self.proc = procs.start("floor", [str(binary), upstream.removeprefix("http://"), str(addr)])
        self.url = "http://" + wait_file(addr, self.proc, "hyper floor proxy")
        wait_http(self.url + "/health", self.proc, "hyper floor proxy")

    cpu, status, reset_peak = Gate.cpu, Gate.status, Gate.reset_peak


def measured(gate: Gate | None, run) -> tuple[Load, float | None, float | None]:
    """Runs a load, returning it with the gate's CPU per request (us) and peak RSS (MiB) over the run."""
    if gate is None:
        return run(), None, None
    gate.reset_peak()
    before = gate.cpu()
    load = run()
    cpu = (gate.cpu() - before) / max(load.requests, 1) * 1e6
    return load, cpu, proc_kib(gate.status(), "VmHWM") / 1024


def idle_connections_rss(gate: Gate, n: int) -> float:
    """The gate's RSS (MiB) holding `n` idle keep-alive connections, each after one authenticated read."""
    host, port = gate.url.removeprefix("http://").split(":")
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection((host, int(port)))
            s.sendall(f"GET {READ[1]} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {LOADER.token}\r\n\r\n".encode())
            socks.append(s)
        for s in socks:
            s.settimeout(10)
            s.recv(65536)
        time.sleep(0.5)
        return proc_kib(gate.status(), "VmRSS") / 1024
    finally:
        for s in socks:
            s.close()


LOADER: Loader


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------

def mint_tokens(bins: dict, keys: Path, count: int, out: Path) -> None:
    log(f"minting {count} distinct tokens for the fresh-token scenarios")
    subprocess.run([str(bins["tokens"]), str(keys), ISSUER, AUDIENCE, SUB, str(count), str(out)], check=True)


def static_scenarios(args, procs: Procs, bins: dict, tmp: Path, keys: Path, policies: Path) -> tuple[list[Row], dict]:
    global LOADER
    up_addr = tmp / "upstream.addr"
    up = procs.start("upstream", [str(bins["upstream"]), str(up_addr), "--threads", "1"])
    upstream = "http://" + wait_file(up_addr, up, "static upstream")
    conf = nginx_conf(tmp, upstream)
    ngx = procs.start("nginx", [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-p", str(conf.parent)])
    ngx_port = int((conf.parent / "port").read_text())
    ngx_url = f"http://127.0.0.1:{ngx_port}"
    ngx_h2 = f"http://127.0.0.1:{ngx_port + 1 if ngx_port < 65000 else ngx_port - 1}"
    wait_http(ngx_url + "/health", ngx, "nginx")
    gate = Gate(procs, bins["gate"], tmp, "gate-static", upstream, keys / "jwks.json", policies)
    floor = Floor(procs, bins["floor"], tmp, upstream) if bins.get("floor") else None
    other = None
    if args.compare_gate:
        other = Gate(procs, Path(args.compare_gate), tmp, "gate-other", upstream, keys / "jwks.json", policies)
    token = subprocess.run([str(bins["gate"]), "dev", "token", "--key-dir", str(keys), "--issuer", ISSUER,
                            "--audience", AUDIENCE, "--sub", SUB, "--ttl", "86400"],
                           capture_output=True, text=True, check=True).stdout.strip()
    tokens = tmp / "tokens.txt"
    if not args.only_mlflow and not args.only_artifacts:
        mint_tokens(bins, keys, args.fresh_tokens, tokens)
    LOADER = Loader(tmp, args.duration, tokens, token)
    L = LOADER

    conns_all = [32] if args.quick else [1, 32, 256]
    rows: list[Row] = []
    plan = []  # (row, callable)

    def add(name, proto, conns, fn, gate_proc=None, vs=None, note=""):
        r = Row(name, proto, conns, vs=vs or {}, note=note)
        rows.append(r)
        plan.append((r, fn, gate_proc))

    for c in conns_all:
        base = {"direct": f"direct: read|h1|{c}", "nginx": f"nginx proxy: read|h1|{c}"}
        add("direct: read", "h1", c, lambda c=c: L.wrk(upstream, READ, c, "none"))
        add("nginx proxy: read", "h1", c, lambda c=c: L.wrk(ngx_url, READ, c, "none"), vs={"direct": base["direct"]})
        if floor:
            add("hyper floor proxy: read", "h1", c, lambda c=c: L.wrk(floor.url, READ, c, "none"), floor, base)
        add("gate, public route (no auth/policy)", "h1", c,
            lambda c=c: L.wrk(gate.url, PUBLIC, c, "none"), gate, base)
        add("gate RS256: read, same token", "h1", c, lambda c=c: L.wrk(gate.url, READ, c, "same"), gate, base)
        if c == 32:
            add("gate RS256: read, fresh token", "h1", c, lambda c=c: L.wrk(gate.url, READ, c, "fresh"), gate, base)
        if other:
            # Before/after in the same run: the other build's rows, interleaved with this build's.
            add("OTHER gate, public route", "h1", c, lambda c=c: L.wrk(other.url, PUBLIC, c, "none"), other, base)
            add("OTHER gate RS256: read, same token", "h1", c, lambda c=c: L.wrk(other.url, READ, c, "same"),
                other, base)
    c = 32
    for rname, route in (("search", SEARCH), ("set-tag", SETTAG)):
        base = {"direct": f"direct: {rname}|h1|{c}", "nginx": f"nginx proxy: {rname}|h1|{c}"}
        add(f"direct: {rname}", "h1", c, lambda route=route: L.wrk(upstream, route, c, "none"))
        add(f"nginx proxy: {rname}", "h1", c, lambda route=route: L.wrk(ngx_url, route, c, "none"),
            vs={"direct": base["direct"]})
        add(f"gate RS256: {rname}, same token", "h1", c, lambda route=route: L.wrk(gate.url, route, c, "same"),
            gate, base)
    base = {"direct": f"direct: read|h2|{c}", "nginx": f"nginx proxy: read|h2|{c}"}
    add("direct: read", "h2", c, lambda: L.h2load(upstream, READ, c, "none"))
    add("nginx proxy: read", "h2", c, lambda: L.h2load(ngx_h2, READ, c, "none"), vs={"direct": base["direct"]})
    add("gate RS256: read, same token", "h2", c, lambda: L.h2load(gate.url, READ, c, "same"), gate, base)

    if args.only_mlflow or args.only_artifacts:
        return [], {"gate": gate, "other": other, "upstream": upstream, "token": token, "nginx": ngx_url}
    for rnd in range(args.rounds):
        log(f"static upstream: round {rnd + 1}/{args.rounds} ({len(plan)} runs of {args.duration} s)")
        for row, fn, g in plan:
            load, cpu, rss = measured(g, fn)
            row.loads.append(load)
            if cpu is not None:
                row.cpu_us.append(cpu)
                row.rss_mib.append(rss)
    for r in rows:
        if any(x.wrapped for x in r.loads):
            r.note = f"(ran out of the {args.fresh_tokens} minted tokens: some were repeats; raise --fresh-tokens)"

    # p99 added latency at half the gate's saturation rate (open loop, h2load --rps, HTTP/1.1).
    extra = {}
    sat = next(r for r in rows if r.key() == "gate RS256: read, same token|h1|32").med("rps")
    half = max(sat / 2, 32)
    lat_rows = []
    for name, url, auth, g in (("direct: read @ half gate saturation", upstream, "none", None),
                               ("gate: read @ half gate saturation", gate.url, "same", gate)):
        r = Row(name, "h1", 32, note=f"(open loop, {half:.0f} req/s offered)")
        lat_rows.append(r)
    for rnd in range(args.rounds):
        for r, (url, auth, g) in zip(lat_rows, ((upstream, "none", None), (gate.url, "same", gate))):
            load, cpu, rss = measured(g, lambda url=url, auth=auth: L.h2load(url, READ, 32, auth, h1=True, rps=half))
            r.loads.append(load)
            if cpu is not None:
                r.cpu_us.append(cpu)
                r.rss_mib.append(rss)
    lat_rows[1].vs = {"direct": lat_rows[0].key()}
    rows += lat_rows
    extra["p99_added"] = lat_rows[1].med("p99") - lat_rows[0].med("p99")
    extra["idle_rss"] = idle_connections_rss(gate, 256)
    extra["gate"], extra["other"], extra["upstream"], extra["token"] = gate, other, upstream, token
    extra["nginx"] = ngx_url
    return rows, extra


def artifacts(args, extra: dict, tmp: Path) -> list[Row]:
    """1 GiB up and down, directly, through nginx (unbuffered, as a reference for what one more copy through a
    user-space proxy costs on this machine) and through the gate (and the --compare-gate build), with curl (one
    connection each), rounds interleaved."""
    gate, other, upstream, token = extra["gate"], extra.get("other"), extra["upstream"], extra["token"]
    size = (64 << 20) if args.quick else (1 << 30)
    size = (args.upload_mib << 20) if args.upload_mib else size
    src = tmp / "upload.bin"
    with open(src, "wb") as f:
        f.truncate(size)
    up_path = "/api/2.0/mlflow-artifacts/artifacts/1/r1/artifacts/upload.bin"
    down_path = "/api/2.0/mlflow-artifacts/artifacts/1/r1/artifacts/bench-1g"
    rows = []
    label = "1 GiB" if size == 1 << 30 else f"{size >> 20} MiB up, 1 GiB down"
    rounds = args.rounds if args.only_artifacts else max(1, args.rounds - 1)
    for what in ("upload", "download"):
        direct = Row(f"direct: {label} artifact {what}", "h1", 1)
        through = Row(f"gate: {label} artifact {what}", "h1", 1, vs={"direct": direct.key()})
        nginx = Row(f"nginx proxy: {label} artifact {what}", "h1", 1, vs={"direct": direct.key()})
        runs = [(direct, upstream, None, None), (nginx, extra["nginx"], None, None), (through, gate.url, token, gate)]
        if other:
            runs.append((Row(f"OTHER gate: {label} artifact {what}", "h1", 1, vs={"direct": direct.key()}),
                         other.url, token, other))
        for rnd in range(rounds):
            for row, base, auth, g in runs:
                # No `Expect: 100-continue` (curl would wait for it), the body straight from the page cache.
                cmd = ["curl", "-sS", "-o", "/dev/null", "-H", "Expect:", "-w",
                       "%{http_code} %{time_total} %{size_upload} %{size_download}"]
                if auth:
                    cmd += ["-H", f"Authorization: Bearer {auth}"]
                if what == "upload":
                    cmd += ["-T", str(src), base + up_path]
                else:
                    cmd += [base + down_path]
                rss0 = proc_kib(g.status(), "VmRSS") / 1024 if g else 0
                expected = size if what == "upload" else 1 << 30

                def run(cmd=cmd, expected=expected):
                    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout.split()
                    code, secs, moved = int(out[0]), float(out[1]), max(float(out[2]), float(out[3]))
                    # The req/s column holds MiB/s for these rows; the "requests" count MiB (CPU per MiB).
                    return Load(max(1, int(moved) >> 20), moved / secs / (1 << 20), secs, secs,
                                0 if code == 200 and moved >= expected else 1)
                load, cpu, rss = measured(g, run)
                row.loads.append(load)
                if g:
                    row.cpu_us.append(cpu)
                    row.rss_mib.append(rss - rss0)
        for row, *_ in runs[2:]:
            row.note = "(req/s: MiB/s; CPU: per MiB; RSS: growth over the transfer)"
        rows += [r for r, *_ in runs]
    return rows


def mlflow_scenarios(args, procs: Procs, bins: dict, tmp: Path, keys: Path, policies: Path, token: str) -> list[Row]:
    import urllib.request
    mlflow = Path(args.venv) / "bin" / "mlflow"
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

    def server(name: str, *extra: str) -> tuple[str, subprocess.Popen]:
        d = tmp / name
        d.mkdir()
        run_env = dict(env)
        if extra:
            # MLflow's basic-auth app with its documented defaults, its users in a database of its own.
            (d / "auth.ini").write_text(
                f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{d}/auth.db\n"
                "admin_username = admin\nadmin_password = bench-admin-password-1\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
            run_env["MLFLOW_AUTH_CONFIG_PATH"] = str(d / "auth.ini")
            run_env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = os.urandom(16).hex()
            if args.basic_auth_pythonpath:
                run_env["PYTHONPATH"] = args.basic_auth_pythonpath
        for attempt in range(5):
            port = free_port()
            p = procs.start(f"{name}-{attempt}", [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port),
                                                  "--workers", "1", "--backend-store-uri", f"sqlite:///{d}/mlflow.db",
                                                  "--serve-artifacts", "--artifacts-destination", str(d / "art"),
                                                  *extra], env=run_env)
            try:
                wait_http(f"http://127.0.0.1:{port}/health", p, f"mlflow server {name}", timeout=180)
                return f"http://127.0.0.1:{port}", p
            except SystemExit:
                if p.poll() is None:
                    raise
        raise SystemExit(f"mlflow server {name} did not start")

    def post(url: str, path: str, body: dict, headers: dict) -> None:
        req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
        urllib.request.urlopen(req, timeout=60).read()

    log("starting mlflow server (plain) and mlflow server --app-name basic-auth")
    plain, _ = server("mlflow-plain")
    basic, _ = server("mlflow-basic", "--app-name", "basic-auth")
    gate = Gate(procs, bins["gate"], tmp, "gate-mlflow", plain, keys / "jwks.json", policies)
    import base64
    basic_auth = "Basic " + base64.b64encode(b"admin:bench-admin-password-1").decode()
    # Created through the gate, so that the bench user is its stamped creator: with resource permissions (issue 11)
    # a model created behind the gate's back has no creator, and every set-tag through the gate is refused (403).
    post(gate.url, "/api/2.0/mlflow/registered-models/create", {"name": "m1"}, {"Authorization": f"Bearer {token}"})
    post(basic, "/api/2.0/mlflow/registered-models/create", {"name": "m1"}, {"Authorization": basic_auth})
    L = LOADER
    rows = []
    conns = 4
    for rname, route in (("read", READ), ("set-tag", SETTAG)):
        direct = Row(f"mlflow direct: {rname}", "h1", conns)
        through = Row(f"mlflow via gate RS256: {rname}", "h1", conns, vs={"direct": direct.key()})
        basic_row = Row(f"mlflow --app-name basic-auth: {rname}", "h1", conns, vs={"direct": direct.key()})
        rows += [direct, through, basic_row]
        for rnd in range(args.rounds):
            log(f"real MLflow, {rname}: round {rnd + 1}/{args.rounds}")
            for row, url, auth, g in ((direct, plain, "none", None), (through, gate.url, "same", gate),
                                      (basic_row, basic, "basic", None)):
                def run(url=url, auth=auth):
                    if auth == "basic":
                        return L.wrk(url, route, conns, "none", extra_header=f"Authorization: {basic_auth}")
                    return L.wrk(url, route, conns, auth)
                load, cpu, rss = measured(g, run)
                row.loads.append(load)
                if cpu is not None:
                    row.cpu_us.append(cpu)
                    row.rss_mib.append(rss)
    return rows


def budgets(rows: list[Row], extra: dict) -> list[str]:
    by = {r.key(): r for r in rows}

    def ratio(a: str, b: str) -> float:
        ra, rb = by.get(a), by.get(b)
        if not ra or not rb or not ra.loads or not rb.loads:
            return float("nan")
        return ra.med("rps") / rb.med("rps")

    def mark(ok: bool) -> str:
        return "held" if ok else "NOT held"

    out = []
    for c in (1, 32, 256):
        same = ratio(f"gate RS256: read, same token|h1|{c}", f"nginx proxy: read|h1|{c}")
        fresh = ratio(f"gate RS256: read, fresh token|h1|{c}", f"nginx proxy: read|h1|{c}")
        if same == same:
            line = f"read at {c} conns: {same:.2f}x nginx with a repeated token (>= 0.70: {mark(same >= 0.70)})"
            if fresh == fresh:
                line += f", {fresh:.2f}x with fresh tokens (>= 0.35: {mark(fresh >= 0.35)})"
            out.append(line)
    floor = ratio("hyper floor proxy: read|h1|32", "nginx proxy: read|h1|32")
    if floor == floor:
        public = ratio("gate, public route (no auth/policy)|h1|32", "nginx proxy: read|h1|32")
        out.append(f"for reference at 32 conns: the stack's floor (examples/hyper_floor.rs) {floor:.2f}x nginx, "
                   f"the gate's public route {public:.2f}x")
    cpu = by.get("gate RS256: read, same token|h1|32")
    if cpu and cpu.cpu_us:
        v = statistics.median(cpu.cpu_us)
        out.append(f"gate CPU per authenticated read (32 conns): {v:.0f} us (< 50 us: {mark(v < 50)})")
    if "p99_added" in extra:
        v = extra["p99_added"] * 1e3
        out.append(f"p99 added latency at half saturation: {v:.2f} ms (< 1 ms: {mark(v < 1)})")
    if "idle_rss" in extra:
        v = extra["idle_rss"]
        out.append(f"RSS at 256 idle keep-alive connections: {v:.1f} MiB (< 64 MiB: {mark(v < 64)})")
    for what in ("upload", "download"):
        r = next((x for x in rows if x.name.startswith("gate: ") and what in x.name), None)
        d = next((x for x in rows if x.name.startswith("direct: ") and what in x.name and "artifact" in x.name), None)
        if r and d and r.loads and d.loads:
            v = r.med("rps") / d.med("rps")
            growth = max(r.rss_mib) if r.rss_mib else float("nan")
            out.append(f"artifact {what}: {v:.2f}x direct (>= 0.90: {mark(v >= 0.90)}), gate RSS growth "
                       f"{growth:.1f} MiB (< 30 MiB: {mark(growth < 30)})")
    for rname in ("read", "set-tag"):
        v = ratio(f"mlflow via gate RS256: {rname}|h1|4", f"mlflow direct: {rname}|h1|4")
        b = ratio(f"mlflow --app-name basic-auth: {rname}|h1|4", f"mlflow direct: {rname}|h1|4")
        if v == v:
            need = 0.97 if rname == "read" else 0.90
            out.append(f"real MLflow {rname}: gate {v:.2f}x direct (>= {need}: {mark(v >= need)}); "
                       f"MLflow basic-auth {b:.2f}x direct")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gate", required=True)
    ap.add_argument("--upstream", required=True, help="the static_upstream example binary")
    ap.add_argument("--tokens", required=True, help="the bench_tokens example binary")
    ap.add_argument("--floor", help="the hyper_floor example binary (adds its rows: the stack's own floor)")
    ap.add_argument("--policies", default=str(Path(__file__).resolve().parent.parent / "policies"))
    ap.add_argument("--venv", help="a venv with mlflow (the real-MLflow scenarios are skipped without it)")
    ap.add_argument("--basic-auth-pythonpath", help="where Flask-WTF is, for MLflow's basic-auth app")
    ap.add_argument("--discard-gate-logs", action="store_true", help="the gates' stderr (one JSON line per "
                    "request) to /dev/null instead of a file: a full run writes gigabytes")
    ap.add_argument("--compare-gate", help="another gate binary (e.g. a build before a change): its public-route "
                    "and same-token read rows run interleaved with this build's, labelled OTHER")
    ap.add_argument("--quick", action="store_true", help="one round of 1 s, 32 connections, no MLflow, 64 MiB")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--fresh-tokens", type=int)
    ap.add_argument("--skip-mlflow", action="store_true")
    ap.add_argument("--only-mlflow", action="store_true", help="the real-MLflow scenarios alone (with a minimal "
                    "static setup for the token)")
    ap.add_argument("--skip-artifacts", action="store_true")
    ap.add_argument("--only-artifacts", action="store_true", help="the artifact transfers alone (with a minimal "
                    "static setup; --compare-gate adds the other build's transfers, interleaved), --rounds rounds")
    ap.add_argument("--upload-mib", type=int, help="upload this many MiB instead of 1 GiB (the download stays 1 GiB)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    global DISCARD_GATE_LOGS
    DISCARD_GATE_LOGS = args.discard_gate_logs
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (1.0 if args.quick else 4.0)
    args.fresh_tokens = args.fresh_tokens or int(30000 * args.duration * args.rounds)
    bins = {"gate": Path(args.gate), "upstream": Path(args.upstream), "tokens": Path(args.tokens)}
    if args.floor:
        bins["floor"] = Path(args.floor)
    tmp = Path(tempfile.mkdtemp(prefix="mlflow-gate-bench-"))
    procs = Procs(tmp)
    keep_tmp = False
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        keys = tmp / "keys"
        subprocess.run([str(bins["gate"]), "dev", "keygen", "--dir", str(keys)], check=True, capture_output=True)
        rows, extra = static_scenarios(args, procs, bins, tmp, keys, Path(args.policies))
        if args.only_mlflow or args.only_artifacts:
            rows = []
        if not args.skip_artifacts and not args.only_mlflow:
            log("artifact transfer, direct and through the gate")
            rows += artifacts(args, extra, tmp)
        if args.venv and not args.quick and not args.skip_mlflow and not args.only_artifacts:
            try:
                rows += mlflow_scenarios(args, procs, bins, tmp, keys, Path(args.policies), extra["token"])
            except SystemExit as e:
                log(f"the real-MLflow scenarios failed: {e} (logs in {tmp})")
                rows.append(Row("real MLflow scenarios", "h1", "-", note=f"failed: {e}"))
                keep_tmp = True
    finally:
        procs.stop_all()
    cpu = "?"
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except Exception:
        pass
    header = (f"mlflow-gate proxy benchmark, {started}, {os.cpu_count()} CPUs ({cpu}); load average before "
              f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; {args.rounds} round(s) of {args.duration} s, "
              f"medians; CPU/req and RSS are the gate's")
    print(render(rows, header))
    print("\nbudgets (issue 13):")
    for line in budgets(rows, extra):
        print(f"  {line}")
    if args.json:
        Path(args.json).write_text(json.dumps([{"name": r.name, "proto": r.proto, "conns": r.conns,
                                                "rps": r.med("rps"), "p50": r.med("p50"), "p99": r.med("p99"),
                                                "cpu_us": r.cpu_us, "rss_mib": r.rss_mib} for r in rows], indent=1))
    if not keep_tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
