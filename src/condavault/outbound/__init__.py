"""Outbound requests made on a user's behalf (mirror upstreams, CVE sources): the URL policy and the
transports that enforce it at every connection."""

from condavault.outbound.policy import UrlPolicy
from condavault.outbound.transport import async_transport, sync_transport

__all__ = ["UrlPolicy", "async_transport", "sync_transport"]
