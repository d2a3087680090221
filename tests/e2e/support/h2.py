"""A minimal HTTP/2 client (prior knowledge after ALPN): enough for one GET and its answer."""

from __future__ import annotations

import ssl
import struct


def h2_get(sock: ssl.SSLSocket, authority: str, path: str) -> tuple[int, bytes]:
    def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
        return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

    def literal(name_index: int, value: str) -> bytes:  # HPACK literal without indexing, indexed name, no Huffman
        assert len(value) < 127
        return bytes([name_index, len(value)]) + value.encode()

    block = b"\x82\x87" + literal(4, path) + literal(1, authority)  # :method GET, :scheme https, :path, :authority
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 0x5, 1, block))
    buffer, status, body = b"", None, b""
    while True:
        while len(buffer) < 9 or len(buffer) < 9 + int.from_bytes(buffer[:3], "big"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"HTTP/2 connection closed early (status {status})")
            buffer += chunk
        length = int.from_bytes(buffer[:3], "big")
        kind, flags, stream = buffer[3], buffer[4], struct.unpack(">I", buffer[5:9])[0] & 0x7FFFFFFF
        payload, buffer = buffer[9:9 + length], buffer[9 + length:]
        if kind == 4 and not flags & 0x1:
            sock.sendall(frame(4, 0x1, 0))  # SETTINGS ACK
        elif kind == 7:
            raise ConnectionError(f"GOAWAY {payload!r}")
        elif kind == 1 and stream == 1:
            # :status from HPACK's static table (8..14); hyper's encoder indexes common statuses
            static = {0x88: 200, 0x89: 204, 0x8A: 206, 0x8B: 304, 0x8C: 400, 0x8D: 404, 0x8E: 500}
            status = static.get(payload[0], -1)
            if flags & 0x1:
                return status, body
        elif kind == 0 and stream == 1:
            body += payload
            if flags & 0x1:
                return status, body
