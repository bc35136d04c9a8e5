"""Upload many files at once from one process: ``python -m tests.support.upload_worker URL TOKEN CHANNEL FILE...``."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx


def main() -> int:
    url, token, channel, *files = sys.argv[1:]
    client = httpx.Client(
        base_url=url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=300,
        limits=httpx.Limits(max_connections=len(files)),
    )

    def one(path: str) -> int:
        p = Path(path)
        r = client.post(f"/api/channels/{channel}/files", params={"filename": p.name}, content=p.read_bytes())
        if r.status_code != 200:
            print(f"{p.name}: {r.status_code} {r.text}", file=sys.stderr)
        return r.status_code

    with ThreadPoolExecutor(max_workers=len(files)) as pool:
        codes = list(pool.map(one, files))
    print(f"{codes.count(200)} ok of {len(codes)}")
    return 0 if all(c == 200 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
