"""The ``condavault`` command line (``main``) and its command modules."""

import sys

# httpx imports its own command-line tool whenever click, pygments and rich are installed (~40 ms of
# every condavault run, which never uses it); it falls back to a stub when that import fails, which a
# None entry in sys.modules makes it do. Nothing else is affected: no module imports httpx._main.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
