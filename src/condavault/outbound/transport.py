"""httpx transports that apply the :class:`~condavault.outbound.policy.UrlPolicy` at connect time.

The policy sits in httpcore's network backend, the one place every connection goes through: for
each connection (the first request, every redirect, a reconnect) the host is resolved, every address
it resolves to is checked (one refused address refuses the host: a name that mixes public and
internal addresses is a rebinding trick), and the connection goes to an address that was checked.
With a proxy the backend checks the proxy's address; the upstream behind it was checked when it was
configured.
"""

from __future__ import annotations

import socket
from typing import Any

import anyio
import httpcore
import httpx

from condavault.errors import UpstreamNotAllowed
from condavault.outbound.policy import UrlPolicy


def _addresses(host: str, infos: list[Any]) -> list[str]:
    out = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not out:
        raise httpcore.ConnectError(f"{host} does not resolve")
    return out


class GuardedAsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, policy: UrlPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, OSError) as exc:
            raise httpcore.ConnectError(f"{host}: {exc}") from exc
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"{host}: name resolution timed out") from exc
        addresses = _addresses(host, list(infos))
        for address in addresses:
            self.policy.check_address(host, address)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        raise UpstreamNotAllowed("unix sockets are not upstreams")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedSyncBackend(httpcore.NetworkBackend):
    def __init__(self, policy: UrlPolicy, inner: httpcore.NetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, OSError) as exc:
            raise httpcore.ConnectError(f"{host}: {exc}") from exc
        addresses = _addresses(host, infos)
        for address in addresses:
            self.policy.check_address(host, address)
        last: Exception | None = None
        for address in addresses:
            try:
                return self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        raise UpstreamNotAllowed("unix sockets are not upstreams")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def async_transport(policy: UrlPolicy, **kwargs: Any) -> httpx.AsyncHTTPTransport:
    """``httpx.AsyncHTTPTransport(**kwargs)`` (``verify``, ``limits``, ``proxy``, ...) whose connections
    go through the policy."""
    transport = httpx.AsyncHTTPTransport(**kwargs)
    transport._pool._network_backend = GuardedAsyncBackend(policy)  # httpx has no public hook for it
    return transport


def sync_transport(policy: UrlPolicy, **kwargs: Any) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(**kwargs)
    transport._pool._network_backend = GuardedSyncBackend(policy)
    return transport
