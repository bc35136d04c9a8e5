"""Map advisory products (CPE vendor:product, PyPI names, CVE 5 vendor/product) to conda names.

Two tables are used:

* the CPE table, a YAML mapping ``{"vendor:product": [conda names]}`` shipped as
  ``condavault/vulns/data/cpe_mapping.yaml`` (operators may pass their own file);
* an optional PyPI mapping from prefix-dev/parselmouth, either ``compressed_mapping.json``
  (conda name -> list of PyPI names or ``null``) or ``mapping_as_grayskull.json`` (conda name ->
  one PyPI name).  It is inverted to PyPI name (PEP 503 normalised) -> conda names.

When inverting, conda packages that bundle many PyPI distributions (e.g. ``pyautogui`` also lists
``pillow``) would produce false positives, so only the candidates with the fewest PyPI names are
kept (plus a conda package named exactly like the PyPI project).  A PyPI name unknown to the
mapping is its own candidate conda name, unless the mapping says a conda package of that name is
not a PyPI package (``null``), e.g. ``zlib``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from condavault.vulns.advisory import Affected

_PEP503 = re.compile(r"[-_.]+")


def normalize_pypi(name: str) -> str:
    """PEP 503 normalisation: lower case, runs of ``-_.`` become ``-``."""
    return _PEP503.sub("-", name).lower().strip()


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


def load_pypi_mapping(path: str | Path) -> tuple[dict[str, tuple[str, ...]], frozenset[str]]:
    """Read a parselmouth mapping; return (PyPI name -> conda names, conda names that are not PyPI)."""
    raw = json.loads(Path(path).read_text("utf-8"))
    forward: dict[str, list[str]] = {}
    not_pypi: set[str] = set()
    for conda_name, pypi in raw.items():
        if pypi is None:
            not_pypi.add(conda_name)
            continue
        names = [pypi] if isinstance(pypi, str) else list(pypi)
        forward[conda_name] = sorted({normalize_pypi(str(n)) for n in names if n})
    candidates: dict[str, list[str]] = {}
    for conda_name, names in forward.items():
        for name in names:
            candidates.setdefault(name, []).append(conda_name)
    inverted: dict[str, tuple[str, ...]] = {}
    for name, conda_names in candidates.items():
        fewest = min(len(forward[c]) for c in conda_names)
        keep = {c for c in conda_names if len(forward[c]) == fewest or c == name}
        inverted[name] = tuple(sorted(keep))
    return inverted, frozenset(not_pypi)


class NameMapping:
    """Resolve an :class:`Affected` entry to the set of conda package names it can match."""

    def __init__(
        self,
        cpe_table: Mapping[str, Iterable[str]] | None = None,
        pypi_to_conda: Mapping[str, Iterable[str]] | None = None,
        not_pypi: Iterable[str] = (),
    ) -> None:
        self.cpe_table = {
            _key(*k.partition(":")[::2]): tuple(v)
            for k, v in (load_cpe_table() if cpe_table is None else cpe_table).items()
        }
        self.pypi_to_conda = {normalize_pypi(k): tuple(v) for k, v in (pypi_to_conda or {}).items()}
        self.not_pypi = frozenset(not_pypi)
        self._by_product: dict[str, set[str]] = {}
        for key, names in self.cpe_table.items():
            self._by_product.setdefault(key.partition(":")[2], set()).update(names)

    @classmethod
    def load(cls, pypi_mapping_path: str | Path | None = None, cpe_table_path: str | Path | None = None) -> NameMapping:
        """Build a mapping from files; both paths are optional (configuration passes them in)."""
        inverted: dict[str, tuple[str, ...]] = {}
        not_pypi: frozenset[str] = frozenset()
        if pypi_mapping_path is not None:
            inverted, not_pypi = load_pypi_mapping(pypi_mapping_path)
        return cls(load_cpe_table(cpe_table_path), inverted, not_pypi)

    @classmethod
    def default(cls) -> NameMapping:
        """The shipped CPE table only (cached)."""
        return _default_mapping()

    def cpe_names(self, vendor: str, product: str) -> set[str]:
        """Conda names for a CPE / CNA ``vendor:product``."""
        return set(self.cpe_table.get(_key(vendor, product), ()))

    def pypi_names(self, name: str) -> set[str]:
        """Conda names for a PyPI project (see module docstring for the fallback rule)."""
        normalized = normalize_pypi(name)
        if not normalized:
            return set()
        mapped = self.pypi_to_conda.get(normalized)
        if mapped:
            return set(mapped)
        if normalized in self.not_pypi:
            return set()
        return {normalized}

    def conda_names_for(self, affected: Affected) -> set[str]:
        """All conda names ``affected`` may refer to (empty when nothing maps)."""
        if affected.kind == "conda":
            return {affected.package} if affected.package else set()
        if affected.kind == "pypi":
            return self.pypi_names(affected.package or affected.product)
        names = self.cpe_names(affected.vendor, affected.product)
        if not names and affected.kind == "generic":
            for candidate in (affected.package, affected.product):
                if candidate:
                    names |= self._by_product.get(candidate.strip().lower(), set())
        return names


@lru_cache(maxsize=1)
def _default_mapping() -> NameMapping:
    return NameMapping.load()
