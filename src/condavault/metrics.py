"""Prometheus metrics. No label carries a channel name: private names must not leak through /metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter("condavault_http_requests_total", "HTTP requests", ["kind", "status"], registry=REGISTRY)
_REQUEST_CHILDREN: dict[tuple[str, int], Any] = {}


def count_request(kind: str, status: int, n: int = 1) -> None:
    """``REQUESTS.labels(kind, status).inc()`` without the label lookup on every request (the children
    are few: kinds x statuses; ``labels()`` cost ~9 % of a 304's CPU)."""
    child = _REQUEST_CHILDREN.get((kind, status))
    if child is None:
        child = _REQUEST_CHILDREN[(kind, status)] = REQUESTS.labels(kind, str(status))
    child.inc(n)


# Repo answers the HTTP protocol gives from memory (``serving.fast``), counted as plain ints: they are
# counted on the event loop only, and :func:`fold_loop_counts` adds them to the counters when /metrics is
# read on the same loop -- not two locked counter increments per 304 (~5 % of its CPU).
LOOP_ANSWERS: dict[int, int] = {200: 0, 304: 0}


def fold_loop_counts() -> None:
    """Add the in-memory answers counted since the last call to the counters. Call it on the event loop
    that serves requests (where ``LOOP_ANSWERS`` is counted)."""
    for status, n in LOOP_ANSWERS.items():
        if n:
            LOOP_ANSWERS[status] = 0
            count_request("repo", status, n)
            ANSWERED_FROM_MEMORY.inc(n)


ANSWERED_FROM_MEMORY = Counter(
    "condavault_http_answered_from_memory_total",
    "Repo requests (304s, cached shards) answered by the HTTP protocol from memory, also in requests_total",
    registry=REGISTRY,
)
SHARD_LOADS = Counter(
    "condavault_shard_lookups_loaded_total",
    "Times this process read every current shard of a subdir at once (at start for the recently published "
    "subdirs, else at its first shard request; again after 15 minutes; an index publish keeps them)",
    registry=REGISTRY,
)
DOWNLOADS = Counter("condavault_package_downloads_total", "Package files served", registry=REGISTRY)
DOWNLOAD_BYTES = Counter("condavault_package_download_bytes_total", "Bytes of package files served", registry=REGISTRY)
UPLOADS = Counter("condavault_uploads_total", "Package uploads by outcome", ["status"], registry=REGISTRY)
INDEX_SECONDS = Histogram(
    "condavault_index_publish_seconds",
    "Time to rebuild and publish one subdir index",
    registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
AUDIT_DROPPED = Counter(
    "condavault_audit_dropped_total", "Downloads not audited because the audit queue was full", registry=REGISTRY
)
JOBS = Counter("condavault_jobs_total", "Durable jobs finished by this process", ["kind", "state"], registry=REGISTRY)
CACHE_INVALIDATIONS_RECEIVED = Counter(
    "condavault_cache_invalidations_received_total",
    "Cache invalidations of other processes applied here (PostgreSQL LISTEN/NOTIFY)",
    registry=REGISTRY,
)
