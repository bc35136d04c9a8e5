"""Hostile HTTP clients on raw sockets: endless bodies, trickling bodies and headers, early disconnects."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass
class Exchange:
    status: int | None  # None: the server sent nothing
    response: bytes
    sent: int  # body bytes the client managed to send
    seconds: float
    closed: bool  # the server closed the connection (EOF seen)

    def header(self, name: str) -> str | None:
        head = self.response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
        for line in head:
            k, _, v = line.partition(":")
            if k.strip().lower() == name.lower():
                return v.strip()
        return None


def endless(chunk: int = 64 * 1024) -> Iterator[bytes]:
    data = b"x" * chunk
    while True:
        yield data


def chunked(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Chunked transfer encoding of ``chunks`` (endless if they are)."""
    for c in chunks:
        yield b"%x\r\n%s\r\n" % (len(c), c)
    yield b"0\r\n\r\n"


def request_head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def exchange(
    port: int,
    head: bytes,
    body: Iterable[bytes] = (),
    *,
    delay: float = 0.0,
    timeout: float = 15.0,
    max_send_seconds: float = 30.0,
) -> Exchange:
    """Send ``head`` then ``body`` chunks (each after ``delay`` seconds) until the server answers, closes
    or ``max_send_seconds`` pass; then read the answer until the server closes (or ``timeout``)."""
    start = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    response = b""
    sent = 0
    closed = False
    try:
        sock.sendall(head)
        for piece in body:
            readable, _, _ = select.select([sock], [], [], delay)
            if readable:
                break  # the server answered (or closed) before the body was sent
            if time.monotonic() - start > max_send_seconds:
                break
            try:
                sock.sendall(piece)
            except OSError:  # reset or broken pipe: the server closed
                break
            sent += len(piece)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                break
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                closed = True
                break
            if not data:
                closed = True
                break
            response += data
    finally:
        sock.close()
    status = None
    if response.startswith(b"HTTP/1."):
        status = int(response.split(b" ", 2)[1])
    return Exchange(status, response, sent, time.monotonic() - start, closed)


def abort_midway(port: int, head: bytes, send: bytes) -> None:
    """Send ``head`` and part of a body, then vanish (RST)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head + send)
    time.sleep(0.2)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
