"""Map advisory products (CPE vendor:product, PyPI names, CVE 5 vendor/product) to conda names.

* **CPE table**: ``{"vendor:product": [conda names]}``, shipped as ``vulns/data/cpe_mapping.yaml``
  (``vulns_cpe_mapping_file`` replaces it);
* **PyPI names**, on by default: a PyPI name is PEP 503 normalised and, unless a mapping entry names
  its conda packages, matches every conda name spelled like it with ``-``, ``_`` or ``.`` between its
  words (PyPI ``jupyter-server`` meets conda ``jupyter_server``). Mapping entries come from the shipped
  table ``vulns/data/pypi_names.yaml`` (renames such as ``torch`` -> ``pytorch``, ``redis`` ->
  ``redis-py``), from mapping sources synced like the advisories (e.g. parselmouth's
  ``compressed_mapping.json``; see ``sources/names.py``) and from ``vulns_mapping_file``. Each entry
  has a relation:

  - ``is``: the conda package is that PyPI project: a **direct** target; a PyPI name with ``is``
    entries maps to exactly those conda names (PyPI ``redis`` is conda ``redis-py``, not the ``redis``
    server);
  - ``bundles``: the conda package carries a copy of it (``inkscape`` bundles ``lxml``): a **bundled**
    target, whose links are labelled and do not count unless a curator confirms them;
  - ``not-pypi``: the conda package of that name is not the PyPI project (no name fallback to it).

  The shipped table wins over synced entries for the same pair (it is curated), then ``is`` over
  ``bundles`` over ``not-pypi``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from condavault.vulns.advisory import Affected
from condavault.vulns.sources.names import NameEntry, normalize_pypi, parse_name_mapping

__all__ = ["NameMapping", "Target", "conda_variants", "load_cpe_table", "normalize_pypi", "shipped_entries"]

SHIPPED = "shipped table"
FEED_PRIORITY = ("osv", "nvd", "nvd-1.1", "cve5", "legacy")  # which feed decides a conda name (matching.py)
_RANK = {"is": 0, "bundles": 1, "not-pypi": 2}
_SEPARATORS = ("-", "_", ".")
MAX_SPELLED_SEPARATORS = 4  # 3**4 spellings; longer names get the three uniform spellings only


@dataclass(frozen=True)
class Target:
    """A conda name an affected product maps to: ``kind`` ``direct`` or ``bundled``, and why."""

    kind: str
    via: str


def _key(vendor: str, product: str) -> str:
    return f"{vendor.strip().lower()}:{product.strip().lower()}"


def load_cpe_table(path: str | Path | None = None) -> dict[str, tuple[str, ...]]:
    """Read a CPE table; ``None`` reads the shipped ``cpe_mapping.yaml``."""
    if path is None:
        text = resources.files("condavault.vulns").joinpath("data/cpe_mapping.yaml").read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    raw = yaml.safe_load(text) or {}
    table: dict[str, tuple[str, ...]] = {}
    for key, names in raw.items():
        vendor, _, product = str(key).partition(":")
        values = [names] if isinstance(names, str) else list(names or ())
        table[_key(vendor, product)] = tuple(str(n) for n in values)
    return table


@lru_cache(maxsize=1)
def shipped_entries() -> tuple[NameEntry, ...]:
    """The shipped PyPI -> conda table (``vulns/data/pypi_names.yaml``)."""
    text = resources.files("condavault.vulns").joinpath("data/pypi_names.yaml").read_text("utf-8")
    return tuple(parse_name_mapping(yaml.safe_load(text)))


def load_mapping_file(path: str | Path) -> list[NameEntry]:
    """Entries of a mapping file (parselmouth JSON or a table like the shipped one)."""
    text = Path(path).read_text("utf-8")
    doc = yaml.safe_load(text) if str(path).endswith((".yaml", ".yml")) else json.loads(text)
    return parse_name_mapping(doc)


@lru_cache(maxsize=65536)
def conda_variants(normalized: str) -> frozenset[str]:
    """Every spelling of a normalised PyPI name with ``-``, ``_`` or ``.`` between its words."""
    words = normalized.split("-")
    if len(words) == 1:
        return frozenset(words)
    if len(words) - 1 > MAX_SPELLED_SEPARATORS:
        return frozenset(sep.join(words) for sep in _SEPARATORS)
    out = set()
    for seps in itertools.product(_SEPARATORS, repeat=len(words) - 1):
        out.add(words[0] + "".join(s + w for s, w in zip(seps, words[1:], strict=True)))
    return frozenset(out)


class NameMapping:
    """Resolve an :class:`Affected` entry to the conda names it can match, each direct or bundled."""

    def __init__(
        self,
        cpe_table: Mapping[str, Iterable[str]] | None = None,
        entries: Iterable[tuple[NameEntry, str]] = (),
        shipped: bool = True,
        *,
        feed_priority: Iterable[str] = FEED_PRIORITY,
        match_bundled: bool = True,
    ) -> None:
        """``entries``: (entry, origin) pairs of synced sources; ``shipped`` adds the shipped table.

        ``feed_priority`` and ``match_bundled`` are the matching settings (``vulns_feed_priority``,
        ``vulns_match_bundled``) that travel with the mapping to every matcher."""
        self.feed_priority = tuple(feed_priority)
        self.match_bundled = match_bundled
        self.cpe_table = {
            _key(*k.partition(":")[::2]): tuple(v)
            for k, v in (load_cpe_table() if cpe_table is None else cpe_table).items()
        }
        self._by_product: dict[str, set[str]] = {}
        for key, names in self.cpe_table.items():
            self._by_product.setdefault(key.partition(":")[2], set()).update(names)
        # normalised PyPI name -> conda name -> (relation, origin)
        self.pypi: dict[str, dict[str, tuple[str, str]]] = {}
        curated = [(e, SHIPPED) for e in shipped_entries()] if shipped else []
        for entry, origin in curated:
            self.pypi.setdefault(entry.name, {})[entry.conda_name] = (entry.relation, origin)
        pinned = {(e.name, e.conda_name) for e, _ in curated}
        for entry, origin in sorted(entries, key=lambda eo: (_RANK.get(eo[0].relation, 9), eo[1], eo[0].name)):
            if entry.ecosystem != "pypi" or (entry.name, entry.conda_name) in pinned:
                continue
            self.pypi.setdefault(entry.name, {}).setdefault(entry.conda_name, (entry.relation, origin))

    @classmethod
    def load(cls, pypi_mapping_path: str | Path | None = None, cpe_table_path: str | Path | None = None) -> NameMapping:
        """The shipped tables plus an optional mapping file (``vulns_mapping_file``)."""
        entries = []
        if pypi_mapping_path is not None:
            entries = [(e, str(pypi_mapping_path)) for e in load_mapping_file(pypi_mapping_path)]
        return cls(load_cpe_table(cpe_table_path), entries)

    @classmethod
    def default(cls) -> NameMapping:
        """The shipped tables only (cached)."""
        return _default_mapping()

    def cpe_names(self, vendor: str, product: str) -> set[str]:
        """Conda names for a CPE / CNA ``vendor:product``."""
        return set(self.cpe_table.get(_key(vendor, product), ()))

    def pypi_targets(self, name: str) -> dict[str, Target]:
        """Conda names for a PyPI project (see the module docstring)."""
        normalized = normalize_pypi(name)
        if not normalized:
            return {}
        known = self.pypi.get(normalized, {})
        out: dict[str, Target] = {}
        for conda_name, (relation, origin) in sorted(known.items()):
            if relation == "is":
                out[conda_name] = Target("direct", f"PyPI {normalized} is conda {conda_name} ({origin})")
        if not out:
            not_pypi = {c for c, (relation, _) in known.items() if relation == "not-pypi"}
            for spelled in sorted(conda_variants(normalized) - not_pypi):
                out[spelled] = Target("direct", f"PyPI {normalized} (PEP 503 name)")
        for conda_name, (relation, origin) in sorted(known.items()):
            if relation == "bundles" and conda_name not in out:
                out[conda_name] = Target("bundled", f"{conda_name} bundles a copy of PyPI {normalized} ({origin})")
        return out

    def pypi_names(self, name: str) -> set[str]:
        """The direct conda names of a PyPI project."""
        return {n for n, t in self.pypi_targets(name).items() if t.kind == "direct"}

    def targets(self, affected: Affected) -> dict[str, Target]:
        """Conda name -> :class:`Target` for everything ``affected`` may refer to (empty: nothing maps)."""
        if affected.kind == "conda":
            return {affected.package: Target("direct", f"conda {affected.package}")} if affected.package else {}
        if affected.kind == "pypi":
            return self.pypi_targets(affected.package or affected.product)
        if affected.kind == "other":
            return {}
        names = self.cpe_names(affected.vendor, affected.product)
        via = f"{affected.vendor}:{affected.product} in the CPE table"
        if not names and affected.kind == "generic":
            for candidate in (affected.package, affected.product):
                if candidate:
                    names |= self._by_product.get(candidate.strip().lower(), set())
            via = f"product {affected.package or affected.product} in the CPE table"
        return {n: Target("direct", via) for n in sorted(names)}

    def conda_names_for(self, affected: Affected) -> set[str]:
        """Every conda name ``affected`` may refer to, direct or bundled."""
        return set(self.targets(affected))


@lru_cache(maxsize=1)
def _default_mapping() -> NameMapping:
    return NameMapping.load()
