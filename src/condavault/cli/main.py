"""``condavault``: the entry point.

``condavault upload ...`` is run by ``cli.uploading`` on the standard library alone when it parses (a bulk
upload does not pay for importing typer, rich and httpx); everything else, and any form of ``upload`` it
does not know (``--help``), goes to the typer application in ``cli.app``.
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> None:
    from condavault.cli.uploading import fast_main

    code = fast_main(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from condavault.cli.app import main as run_app

    run_app()


def __getattr__(name: str) -> Any:  # ``from condavault.cli.main import app`` (tests, plugins) still works
    if name == "app":
        from condavault.cli.app import app

        return app
    raise AttributeError(name)


if __name__ == "__main__":
    main()
