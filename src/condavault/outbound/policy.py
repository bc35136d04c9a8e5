"""Where this server may connect on a user's behalf: mirror upstreams and CVE sources (no SSRF).

An address is refused when it is unspecified, multicast, link-local (169.254.0.0/16, fe80::/10 -- the
cloud metadata services live there) or a known metadata address, whatever the settings say; when it
matches ``upstream_deny_hosts``; when it is loopback and ``upstream_allow_loopback`` is off (the
default); when it is private (RFC 1918, ULA, CGNAT) and ``upstream_allow_private`` is off; and, when
``upstream_allow_hosts`` is set, unless its host name or address matches an entry. Entries are host
names (``conda.anaconda.org``), suffixes (``*.example.com``) or networks (``10.1.0.0/16``).

:meth:`UrlPolicy.check_url` runs when a mirror or CVE source is configured (names are resolved, best
effort); :mod:`condavault.outbound.transport` runs :meth:`UrlPolicy.refusal` again for every
connection, after redirects and after DNS resolution, and connects to the very address it checked (a
name that resolves elsewhere a second later -- DNS rebinding -- gains nothing).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from condavault.errors import UpstreamNotAllowed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "192.0.0.192", "fd00:ec2::254")
)
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data"})
NAT64 = ipaddress.ip_network("64:ff9b::/96")
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
CGNAT = ipaddress.ip_network("100.64.0.0/10")


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped or NAT64 IPv6 address (``::ffff:127.0.0.1``)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


@dataclass(frozen=True)
class _Entry:
    name: str | None = None  # exact host name, or ".suffix" for *.suffix
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    @classmethod
    def parse(cls, text: str) -> _Entry:
        text = text.strip().lower()
        try:
            return cls(network=ipaddress.ip_network(text, strict=False))
        except ValueError:
            return cls(name=text[1:] if text.startswith("*.") and len(text) > 2 else text)

    def matches(self, host: str, ip: IPAddress | None) -> bool:
        if self.network is not None:
            return ip is not None and ip.version == self.network.version and ip in self.network
        assert self.name is not None
        if self.name.startswith("."):
            return host.endswith(self.name)
        return host == self.name


@dataclass(frozen=True)
class UrlPolicy:
    allow: tuple[_Entry, ...] = ()
    deny: tuple[_Entry, ...] = ()
    allow_loopback: bool = False
    allow_private: bool = True

    @classmethod
    def from_settings(cls, settings: Any) -> UrlPolicy:
        return cls(
            allow=tuple(_Entry.parse(e) for e in settings.upstream_allow_hosts if e.strip()),
            deny=tuple(_Entry.parse(e) for e in settings.upstream_deny_hosts if e.strip()),
            allow_loopback=settings.upstream_allow_loopback,
            allow_private=settings.upstream_allow_private,
        )

    def refusal(self, host: str, ip: IPAddress | None) -> str | None:
        """Why connecting to ``host`` (at ``ip``, when known) is refused, or None."""
        host = host.strip().rstrip(".").lower()
        if host in METADATA_NAMES:
            return "a cloud metadata service"
        if ip is not None:
            ip = _unwrap(ip)
            if ip in METADATA:
                return "a cloud metadata service"
            if ip.is_unspecified or ip.is_multicast or ip.is_link_local or ip.is_reserved:
                return "a link-local, unspecified, multicast or reserved address"
        if any(e.matches(host, ip) for e in self.deny):
            return "denied by upstream_deny_hosts"
        if ip is not None:
            if ip.is_loopback and not self.allow_loopback:
                return "a loopback address (set upstream_allow_loopback to allow it)"
            private = (ip.is_private or ip in CGNAT) and not ip.is_loopback
            if private and not self.allow_private:
                return "a private address (upstream_allow_private is off)"
        elif (host == "localhost" or host.endswith(".localhost")) and not self.allow_loopback:
            return "a loopback address (set upstream_allow_loopback to allow it)"
        if self.allow and not any(e.matches(host, ip) for e in self.allow):
            return "not in upstream_allow_hosts"
        return None

    def check_address(self, host: str, address: str) -> None:
        reason = self.refusal(host, ipaddress.ip_address(address.split("%", 1)[0]))
        if reason is not None:
            raise UpstreamNotAllowed(
                f"connecting to {host} ({address}) is not allowed: {reason}", host=host, address=address
            )

    def check_url(
        self, url: str, *, what: str = "upstream", resolve: bool = True, schemes: tuple[str, ...] = ("http", "https")
    ) -> None:
        """Refuse a URL pointing where this server may not connect (at configuration time)."""
        parts = urlsplit(url)
        if parts.scheme not in schemes or not parts.hostname:
            raise UpstreamNotAllowed(f"{what} {url!r} must be a {'/'.join(schemes)} URL with a host", url=url)
        host = parts.hostname
        literal = _literal(host)
        reason = self.refusal(host, literal)
        if reason is None and literal is None and resolve:
            for address in resolve_host(host, parts.port or 443):
                reason = self.refusal(host, ipaddress.ip_address(address.split("%", 1)[0]))
                if reason is not None:
                    break
        if reason is not None:
            raise UpstreamNotAllowed(f"{what} host {host!r} is not allowed: {reason}", url=url, host=host)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def resolve_host(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (empty when it does not resolve: checked again at connect)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
