"""The proxy benchmark's (scripts/bench_proxy.py) reading of wrk and h2load output and its table: the figures it
prints come from the tools' own lines, and each ratio is to the baseline of the same run. No load is generated."""
import importlib.util
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("bench_proxy", Path(__file__).parents[2] / "scripts" / "bench_proxy.py")
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_proxy"] = bench  # dataclasses look their module up
spec.loader.exec_module(bench)

WRK = """Running 4s test @ http://127.0.0.1:40000
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   410.12us  200.01us   8.20ms   90.00%
  Latency Distribution
     50%  350.00us
     75%  420.00us
     90%  600.00us
     99%    1.50ms
  80000 requests in 4.00s, 10.00MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  20000.00
Transfer/sec:      2.50MB
"""

H2LOAD = """finished in 4.00s, 5000.00 req/s, 1.00MB/s
requests: 20000 total, 20000 started, 20000 done, 19990 succeeded, 10 failed, 0 errored, 0 timeout
status codes: 19990 2xx, 0 3xx, 10 4xx, 0 5xx
"""


def test_wrk_summary_gives_throughput_percentiles_and_failures():
    load = bench.parse_wrk(WRK)
    assert (load.requests, load.rps, load.errors) == (80000, 20000.0, 3)
    assert abs(load.p50 - 350e-6) < 1e-9 and abs(load.p99 - 1.5e-3) < 1e-9


def test_h2load_percentiles_come_from_its_per_request_log():
    log = [f"1700000000\t200\t{us}" for us in range(1, 101)]
    load = bench.parse_h2load(H2LOAD, log)
    assert (load.requests, load.rps, load.errors) == (20000, 5000.0, 20)
    assert abs(load.p50 - 51e-6) < 1e-9 and abs(load.p99 - 100e-6) < 1e-9


def test_process_cpu_is_read_after_a_command_name_with_spaces():
    stat = "42 (mlflow gate) S " + " ".join(["0"] * 10) + " 300 200 0 0"
    assert bench.proc_cpu_seconds(stat) == 500 / bench.CLK_TCK


def test_table_ratios_are_to_the_baselines_of_the_same_run():
    nginx = bench.Row("nginx proxy: read", "h1", 32, loads=[bench.Load(1, 100.0, 1e-3, 2e-3)] * 3)
    gate = bench.Row("gate RS256: read, same token", "h1", 32, vs={"nginx": nginx.key()},
                     loads=[bench.Load(1, v, 1e-3, 2e-3) for v in (60.0, 80.0, 70.0)], cpu_us=[40, 50, 45],
                     rss_mib=[20.0, 22.0, 21.0])
    table = bench.render([nginx, gate], "header")
    line = table.splitlines()[-1]
    assert "0.70x nginx" in line and "45us" in line and "22.0" in line
    assert any("held" in b for b in bench.budgets([nginx, gate], {}))
