"""The answers a repo request can get from memory alone, as whole HTTP/1.1 responses.

Most of a repository's traffic is conda clients revalidating index files (``If-None-Match`` -> 304)
and fetching shards. When everything such a request needs is already cached in this process -- the
caller's token, the channel and the file's lookup entry -- the answer is a few header lines (and, for
a shard GET, the shard's bytes: from memory, or read once from a small local blob file, as the normal
path does on the event loop too). :func:`answer` builds them without ASGI: the HTTP protocol (``web.listener``) calls
it as soon as a request's headers are parsed and writes the bytes to the socket, with no task, no
ASGI messages and no middleware.

Whenever anything is not cached, or the request is anything but a plain ``GET``/``HEAD`` of an index
file or a shard (a body, a query string, a ``%`` escape, a session cookie, an error to report, a
package download that must be audited), :func:`answer` returns None and the request takes the normal
path (``serving.repo``), which answers it exactly as before and fills the caches. The answers are the
same either way: the same lookups, the same authorisation (``auth.policy.allowed``), the same headers
(``repo.entity_headers``), the same request counter (kept as plain ints on the event loop until /metrics
is read: ``metrics.LOOP_ANSWERS``).
"""

from __future__ import annotations

from typing import Any

from condavault import metrics
from condavault.auth.deps import credential_from_headers
from condavault.auth.identity import ANONYMOUS
from condavault.auth.permissions import Permission
from condavault.auth.policy import allowed
from condavault.errors import CondavaultError
from condavault.serving import repo

PREFIX = b"/api/repo/"
_CREDENTIALS = (b"authorization", b"x-auth", b"x-api-key")
_HEADS: dict[tuple[str, ...], bytes] = {}  # encoded entity headers, by their values (few distinct)


def _head(headers: dict[str, str], *extra: str) -> bytes:
    key = (*headers.values(), *extra)
    out = _HEADS.get(key)
    if out is None:
        lines = [f"{k.lower()}: {v}\r\n" for k, v in headers.items()]
        if extra:
            lines.append(f"content-type: {extra[0]}\r\ncontent-length: {extra[1]}\r\n")
        out = "".join(lines).encode("latin-1")
        if len(_HEADS) > 4096:
            _HEADS.clear()
        _HEADS[key] = out
    return out


def answer(
    app_state: Any, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes, bytes] | None:
    """``(status, header lines, body)`` for a request answerable from memory, else None. The header
    lines end with CRLF, without the server's own (``date``) and the blank line. ``url`` is the raw
    request target; ``headers`` have lower-case names."""
    if method != b"GET" and method != b"HEAD":
        return None
    if not url.startswith(PREFIX) or b"%" in url or b"?" in url or b"\x00" in url:
        return None
    ctx = getattr(app_state, "ctx", None)
    if ctx is None:
        return None
    inm = ims = None
    creds: dict[str, str] | None = None
    for name, value in headers:
        if name == b"if-none-match":
            inm = value.decode("latin-1")
        elif name == b"if-modified-since":
            ims = value.decode("latin-1")
        elif name in _CREDENTIALS:
            if creds is None:
                creds = {}
            creds[name.decode()] = value.decode("latin-1")
        elif name == b"cookie" or name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return None  # a web session (looked up on a thread), or a body: the normal path
    try:
        token, parts = repo.split_path(url[len(PREFIX) :].decode("ascii"))
    except UnicodeDecodeError:
        return None
    if len(parts) < 2:
        return None
    if token is None and creds is not None:
        try:
            token = credential_from_headers(creds)
        except CondavaultError:
            return None  # malformed credentials: the normal path answers 401
    identity = ANONYMOUS
    if token:
        cached, ident = ctx.auth.peek_token(token)
        if not cached or ident is None:
            return None
        identity = ident
    cached, channel = ctx.channels.peek(parts[0])
    if not cached or channel is None or not allowed(identity, Permission.CHANNEL_READ, channel):
        return None  # 401/403/404 with their messages: the normal path
    key = repo.target_key(channel.id, parts[1:])
    if key is None or key[0] == "package":  # downloads are audited: the normal path
        return None
    hit, target = ctx.lookup.cached(key)
    if not hit or target is None:
        return None
    if key[3] == "repodata_shards.msgpack.zst":
        ctx.lookup.prime_soon(channel.id, key[2])  # its shards come next
    entity = repo.entity_headers(ctx, channel, target)
    if repo.not_modified(inm, ims, entity["ETag"], target.last_modified):
        metrics.LOOP_ANSWERS[304] += 1
        return 304, _head(entity), b""
    if target.kind != "shard" or target.size > repo.SMALL_BLOB or ctx.settings.x_accel_redirect_prefix:
        return None
    body = repo.small_local(ctx.blobs, target.sha256)  # from memory, or a small local file read now
    if body is None:
        return None  # an object store, a missing or damaged blob: the normal path
    metrics.LOOP_ANSWERS[200] += 1
    return 200, _head(entity, target.content_type, str(len(body))), b"" if method == b"HEAD" else body
