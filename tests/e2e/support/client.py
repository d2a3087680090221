"""A raw HTTP/1.1 client for gates under test: one request per connection, over TLS with a given context (and the
server certificate's serial it was shown), and the check that a TLS client gets no HTTP answer at all."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509

from conftest import Gate
from support.pki import Issued

REQUEST_ID = "x-mlflow-gate-request-id"


def tls_context(ca: Path | None = None, client: Issued | None = None, alpn: list[str] | None = None,
                max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    if client:
        ctx.load_cert_chain(*client.pair)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if max_version:
        ctx.maximum_version = max_version
    return ctx


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    serial: int | None = None

    def json(self) -> dict:
        return json.loads(self.body)


def request(base: str | Gate, method: str, path: str, token: str | None = None, *,
            ctx: ssl.SSLContext | None = None, json_body: dict | None = None, headers: dict | None = None,
            timeout: float = 30) -> Reply:
    """One request on a new connection (Connection: close). Over TLS, also returns the server certificate's
    serial number as presented in this connection's handshake."""
    url = base.url if isinstance(base, Gate) else base
    scheme, _, hostport = url.partition("://")
    host, port = hostport.rsplit(":", 1)
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.connect()
        serial = None
        if scheme == "https":
            serial = x509.load_der_x509_certificate(conn.sock.getpeercert(binary_form=True)).serial_number
        all_headers = {"Connection": "close", **(headers or {})}
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read(), serial)
    finally:
        conn.close()


def refused(gate: Gate, ctx: ssl.SSLContext, token: str | None = None, name: str | None = None) -> str:
    """Asserts that a TLS client with `ctx` gets no HTTP answer at all, and returns the TLS alert it gets instead.
    In TLS 1.2 the handshake itself fails; in TLS 1.3 the client's side of the handshake completes and the
    server's alert arrives on the first read. With `name`, also tries to create that experiment with `token`."""
    with socket.create_connection(("127.0.0.1", gate.port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                data = sock.recv(1024)
                pytest.fail(f"expected the TLS handshake to be refused, the server sent {data!r}")
        except ssl.SSLError as err:
            alert = f"{type(err).__name__}: {err}"
    try:
        body = {"name": name} if name else None
        reply = request(gate, "POST" if name else "GET", "/api/2.0/mlflow/experiments/create" if name else "/health",
                        token, ctx=ctx, json_body=body, timeout=10)
    except (ssl.SSLError, OSError, http.client.HTTPException):
        return alert
    pytest.fail(f"expected the TLS handshake to be refused, got HTTP {reply.status}: {reply.body[:200]!r}")


def plain_get(url: str, **kwargs) -> requests.Response | None:
    try:
        with requests.Session() as session:
            session.trust_env = False
            return session.get(url, timeout=5, **kwargs)
    except requests.RequestException:
        return None


def as_response(reply: Reply) -> requests.Response:
    response = requests.Response()
    response.status_code = reply.status
    response.headers.update(dict(reply.headers.items()))
    response._content = reply.body  # noqa: SLF001 (a Response built from a raw reply)
    return response
