"""The gate's admin listener as a test sees it: Prometheus text format parsed, checked (every sample has a
# TYPE line) and summed by labels."""

from __future__ import annotations

import re

import requests

from conftest import Gate


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$")
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_prometheus(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """Prometheus text format: `# TYPE name kind` lines and `name{label="value",...} value` samples."""
    types: dict[str, str] = {}
    samples = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("# HELP"):
            continue
        if line.startswith("# TYPE"):
            _, _, name, kind = line.split(maxsplit=3)
            types[name] = kind
            continue
        assert not line.startswith("#"), line
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels_text, value = match.groups()
        labels, pos = {}, 0
        while labels_text and pos < len(labels_text):
            label = LABEL.match(labels_text, pos)
            assert label, f"bad labels in {line!r}"
            labels[label.group(1)] = re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)),
                                            label.group(2))
            pos = label.end()
        samples.append((name, labels, float(value)))
    return types, samples


def scrape(gate: Gate) -> list[tuple[str, dict[str, str], float]]:
    with requests.Session() as session:
        session.trust_env = False
        response = session.get(f"{gate.admin_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    types, samples = parse_prometheus(response.text)
    for name, _, _ in samples:
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"{name} has no # TYPE line"
    return samples


def metric_value(samples, name: str, **labels: str) -> float:
    return sum(v for n, l, v in samples if n == name and all(l.get(k) == want for k, want in labels.items()))
