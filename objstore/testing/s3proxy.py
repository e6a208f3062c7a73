"""A loopback TCP proxy in front of an S3 server (real sockets, a thread per
connection), misbehaving once on request: for the tests of create-only PUTs
whose answer is lost or is a spurious conflict; and counting every request and
delaying each by a fixed time, for the request benchmark (a real bucket answers
in 20-50 ms, loopback in well under one).

- ``lose``: forwards the request, reads the upstream answer, and closes the
  client's connection without replying: the create landed, the writer never
  heard. Its retry gets 412 for its own write.
- ``conflict``: answers ``409 ConditionalRequestConflict`` without forwarding,
  as AWS does for a conditional create racing a delete: nothing landed.

Everything else is forwarded one request per upstream connection, the answer
rewritten to ``Connection: close`` so the client never reuses a socket the
proxy is about to close.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

CONFLICT_409 = (b"HTTP/1.1 409 Conflict\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s")
CONFLICT_BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ConditionalRequestConflict</Code>'
                 b"<Message>A conflicting conditional operation is in progress</Message></Error>")


def _read_head(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """(the request's header block, whatever body bytes came with it); None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            return None
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _with_header(head: bytes, name: bytes, value: bytes) -> bytes:
    lines = [line for line in head.split(b"\r\n") if line.partition(b":")[0].strip().lower() != name]
    return b"\r\n".join([*lines, name + b": " + value])


@dataclass
class MisbehavingProxy:
    upstream: tuple[str, int]
    key_suffix: str
    mode: str  # "lose", "conflict", or "none" (forward everything)
    fired: int = 0
    delay: float = 0.0  # seconds added before forwarding each request
    requests: int = 0  # requests received since started (or since take_count)
    listener: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def take_count(self) -> int:
        """Requests received since the last call (or the start), and start counting afresh."""
        with self._lock:
            n, self.requests = self.requests, 0
        return n

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _should_fire(self, head: bytes) -> bool:
        method, path = head.split(b" ", 2)[:2]
        if self.mode == "none" or method != b"PUT" or _header(head, b"if-none-match") is None:
            return False
        if not urlparse(path.decode()).path.endswith("/" + self.key_suffix):
            return False
        with self._lock:
            if self.fired:
                return False
            self.fired += 1
            return True

    def _serve(self, client: socket.socket) -> None:
        with client:
            while True:
                got = _read_head(client)
                if got is None:
                    return
                head, body = got
                length = int(_header(head, b"content-length") or b"0")
                while len(body) < length:
                    piece = client.recv(65536)
                    if not piece:
                        return
                    body += piece
                with self._lock:
                    self.requests += 1
                if self.delay:
                    time.sleep(self.delay)
                fire = self._should_fire(head)
                if fire and self.mode == "conflict":
                    client.sendall(CONFLICT_409 % (len(CONFLICT_BODY), CONFLICT_BODY))
                    return
                answer = self._forward(_with_header(head, b"connection", b"close") + b"\r\n\r\n" + body)
                if fire:  # "lose": it landed upstream; the client never hears
                    return
                answer_head, _, answer_body = answer.partition(b"\r\n\r\n")
                client.sendall(_with_header(answer_head, b"connection", b"close") + b"\r\n\r\n" + answer_body)
                return

    def _forward(self, request: bytes) -> bytes:
        with socket.create_connection(self.upstream) as up:
            up.sendall(request)
            chunks = []
            while piece := up.recv(65536):
                chunks.append(piece)
        return b"".join(chunks)
