"""Solve and install with py-rattler in a fresh process (so ``RATTLER_AUTH_FILE`` is read cleanly).

    python -m tests.support.rattler_client CHANNEL_URL PREFIX SPEC... [--bearer]

Prints one JSON line: {"installed": [...]} or {"error": "..."}.
With ``--bearer`` the requests go through a ``Client`` with an ``AuthenticationMiddleware``, which
reads the credentials file named by ``RATTLER_AUTH_FILE``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys


async def main(channel_url: str, prefix: str, specs: list[str], bearer: bool) -> dict[str, object]:
    from rattler import Channel, ChannelConfig, Gateway, Platform, install, solve
    from rattler.networking import AuthenticationMiddleware, Client

    client = Client([AuthenticationMiddleware()]) if bearer else None
    base, _, name = channel_url.rstrip("/").rpartition("/")
    channel = Channel(name, ChannelConfig(channel_alias=base + "/"))
    gateway = Gateway(cache_dir=os.path.join(prefix, "repodata-cache"), client=client)
    records = await solve(
        sources=[channel],
        specs=specs,
        gateway=gateway,
        platforms=[Platform("linux-64"), Platform("noarch")],
        virtual_packages=[],
    )
    await install(
        records,
        target_prefix=os.path.join(prefix, "env"),
        cache_dir=os.path.join(prefix, "pkgs"),
        client=client,
        show_progress=False,
    )
    meta = os.listdir(os.path.join(prefix, "env", "conda-meta"))
    return {"installed": sorted(m[:-5] for m in meta if m.endswith(".json"))}


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--bearer"]
    try:
        out = asyncio.run(main(args[0], args[1], args[2:], "--bearer" in sys.argv))
    except Exception as exc:  # reported to the test, which checks the status in the message
        out = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out))
