"""Support for the browser sign-in suites: the real OpenID Connect provider (node `oidc-provider`, installed by
scripts/test.sh with `npm ci` in tests/browser/idp), a gate with `[browser]` in front of the real MLflow server,
and the sign-in round trip done with `requests` (as a browser would: follow redirects, fill in the IdP's login form).
"""

from __future__ import annotations

import base64
import html.parser
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import REPO, Server, free_port, gate_process, gate_settings, read_addr, start, stop, wait_for

IDP_DIR = REPO / "tests" / "browser" / "idp"
CLIENT_ID = "mlflow-gate"
ARTIFACTS = REPO / "test-artifacts" / "browser"


@dataclass(frozen=True)
class Idp:
    """The running test IdP."""

    issuer: str
    client_secret: str
    log: Path


@contextmanager
def idp_process(tmp: Path) -> Iterator[Idp]:
    """The node IdP on 127.0.0.1, port 0 (its address file says which); stopped on exit."""
    node = shutil.which("node")
    if not node or not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("the test IdP is not installed: run `npm ci` in tests/browser/idp (scripts/test.sh does)")
    addr_file, log = tmp / "idp.addr", tmp / "idp.log"
    addr_file.unlink(missing_ok=True)
    secret = secrets.token_urlsafe(24)
    env = {**os.environ, "IDP_ADDR_FILE": str(addr_file), "IDP_CLIENT_SECRET": secret, "IDP_CLIENT_ID": CLIENT_ID}
    proc = start([node, str(IDP_DIR / "idp.mjs")], log, env=env, cwd=IDP_DIR)
    try:
        addr = wait_for(lambda: read_addr(addr_file), "test IdP: addr file", proc, log, 30)
        yield Idp(f"http://{addr}", secret, log)
    finally:
        stop(proc)


@dataclass(frozen=True)
class BrowserGate:
    """A gate with `[browser]`: its URL (also its public origin) and process facts."""

    url: str
    log: Path
    idp: Idp
    cookie_key: str

    @property
    def logs(self):
        return [("gate", self.log), ("idp", self.idp.log)]


def browser_settings(mlflow_url: str, jwks: Path, idp: Idp, port: int, cookie_key_env: str) -> dict:
    """The e2e gate's config plus the IdP as a second issuer and `[browser]` signing in with it on `port`."""
    origin = f"http://127.0.0.1:{port}"
    return gate_settings(mlflow_url, jwks, {
        "server": {"listen": f"127.0.0.1:{port}"},
        "auth.issuers": [{"issuer": idp.issuer, "audiences": ["mlflow"], "algorithms": ["RS256"],
                          "discovery_url": f"{idp.issuer}/.well-known/openid-configuration",
                          "groups_claim": "groups"}],
        "browser": {"issuer": idp.issuer, "client_id": CLIENT_ID, "client_secret_env": "GATE_OIDC_SECRET",
                    "redirect_url": f"{origin}/gate/callback", "public_origins": [origin],
                    "cookie_key_env": cookie_key_env, "scopes": ["openid", "profile", "email", "groups"]},
    })


@contextmanager
def browser_gate(tmp: Path, mlflow_url: str, jwks: Path, idp: Idp) -> Iterator[BrowserGate]:
    """The gate on a port picked now (the redirect URL names it before the gate starts, so it cannot be port 0);
    started again on another port if that one was taken in between."""
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    env = {"GATE_OIDC_SECRET": idp.client_secret, "GATE_COOKIE_KEY": key}
    for attempt in range(1, 4):
        port = free_port()
        settings = browser_settings(mlflow_url, jwks, idp, port, "GATE_COOKIE_KEY")
        with ExitStack() as stack:
            try:
                gate = stack.enter_context(gate_process(tmp, settings, env))
            except pytest.fail.Exception:
                if attempt == 3 or "in use" not in (tmp / "gate.log").read_text(errors="replace").lower():
                    raise
                continue
            yield BrowserGate(gate.url, gate.log, idp, key)
            return


class _Form(html.parser.HTMLParser):
    """The first form of a page: its action and its inputs."""

    def __init__(self):
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action", "")
        elif tag == "input" and a.get("name"):
            self.fields[a["name"]] = a.get("value") or ""


def login_form(page: str) -> _Form:
    form = _Form()
    form.feed(page)
    assert form.action, f"no form on the IdP's page: {page[:300]}"
    return form


def session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return s


def sign_in(gate: BrowserGate, user: str, path: str = "/") -> tuple[requests.Session, requests.Response]:
    """Signs `user` in as a browser does: navigate to `path`, get sent to the IdP, fill in its login form, come
    back through the callback. Returns the browser's session and the final response."""
    s = session()
    html_accept = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    page = s.get(gate.url + path, headers=html_accept, timeout=30)
    assert page.url.startswith(gate.idp.issuer), f"not sent to the IdP: {page.url}"
    form = login_form(page.text)
    form.fields.update({"login": user, "password": "any"})
    action = requests.compat.urljoin(page.url, form.action)
    done = s.post(action, data=form.fields, headers=html_accept, timeout=30)
    return s, done


def session_cookie(s: requests.Session) -> str | None:
    return next((c.value for c in s.cookies if c.name.endswith("mlflow-gate-session")), None)


def shot_path(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"


def post(bgate: BrowserGate, s: requests.Session, path: str, body: dict) -> requests.Response:
    """A state change the way the UI (or the review page's script) sends it: same origin, JSON, the session."""
    return s.post(f"{bgate.url}/ajax-api/2.0/mlflow/{path}", json=body, headers={"Origin": bgate.url}, timeout=30)


def _ok(resp: requests.Response) -> dict:
    assert resp.status_code == 200, resp.text
    return resp.json()


def register_and_request(bgate: BrowserGate, s: requests.Session, name: str, tag_note: str = "",
                         comment: str = "") -> dict:
    """Through the gate with the session `s`: an experiment, a finished run with the default gate's required tags
    and a metric, a registered model `name` and a version of it (stamped with the session's principal as creator),
    a version tag `note`, and a request to move the version to Staging. Returns the ids."""
    exp = _ok(post(bgate, s, "experiments/create", {"name": f"{name}-exp"}))["experiment_id"]
    tags = [{"key": "data_version", "value": "2026-11"}, {"key": "git_commit", "value": "0f1e2d3c"}]
    run = _ok(post(bgate, s, "runs/create", {"experiment_id": exp, "tags": tags}))["run"]["info"]
    run_id = run["run_id"]
    _ok(post(bgate, s, "runs/log-metric", {"run_id": run_id, "key": "val_auc", "value": 0.93, "timestamp": 0}))
    _ok(post(bgate, s, "runs/update", {"run_id": run_id, "status": "FINISHED"}))
    _ok(post(bgate, s, "registered-models/create", {"name": name}))
    mv = _ok(post(bgate, s, "model-versions/create",
                  {"name": name, "source": f"{run['artifact_uri']}/model", "run_id": run_id}))["model_version"]
    version = mv["version"]
    if tag_note:
        _ok(post(bgate, s, "model-versions/set-tag", {"name": name, "version": version, "key": "note",
                                                      "value": tag_note}))
    _ok(post(bgate, s, "transition-requests/create",
             {"name": name, "version": version, "stage": "Staging", "comment": comment}))
    return {"name": name, "version": version, "run_id": run_id, "experiment_id": exp}
