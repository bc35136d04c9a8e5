"""PyPI <-> conda name mapping files -> :class:`NameEntry` rows (a source synced like the advisories).

Two layouts are read:

* **parselmouth** (prefix-dev/parselmouth): ``compressed_mapping.json`` (conda name -> list of the PyPI
  distributions found in the package, or ``null`` when it is not a PyPI package) and
  ``mapping_as_grayskull.json`` (conda name -> one PyPI name);
* **condavault's own table** (the shipped ``vulns/data/pypi_names.yaml``, or an operator's file of the
  same shape): ``is`` (PyPI name -> conda names that *are* that project), ``bundles`` (conda name ->
  PyPI projects it carries a copy of) and ``not-pypi`` (conda names that share a name with a PyPI
  project they are not).

A parselmouth entry says which PyPI distributions a conda package contains, not whether the package *is*
them: ``inkscape`` contains ``lxml`` and ``nsight-compute`` contains ``pip``. :func:`classify` tells the
two apart, and the relation is stored on every entry:

1. a PyPI name equal to the conda name (PEP 503, ignoring a ``py-`` / ``python-`` prefix or a ``-py`` /
   ``-python`` suffix) is what the package **is**; every other distribution in it is **bundled**
   (``ansible`` is ``ansible`` and bundles ``pip``, ``setuptools`` ...);
2. otherwise a PyPI name whose significant words equal the conda name's is what the package is
   (``pytorch`` / ``torch``, ``py-opencv`` / ``opencv-python``, ``tensorflow-base`` / ``tensorflow``):
   words are split at ``-``; a leading ``py`` / ``python`` / ``lib`` is dropped from a word (when three
   letters remain) and the words ``py``, ``python``, ``lib``, ``base``, ``core``, ``cpu``, ``gpu``,
   ``cuda``, ``headless`` and ``bin`` do not count; a package of a single distribution only needs one
   word in common, or one name (without separators, five letters or more) inside the other
   (``crosshair`` / ``crosshair-tool``, ``epiweeks4cf`` / ``epiweeks``);
3. anything else is **bundled** (``inkscape`` / ``lxml``, ``nsight-compute`` / ``pip``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

RELATIONS = ("is", "bundles", "not-pypi")
_PEP503 = re.compile(r"[-_.]+")
_GENERIC = {"py", "python", "lib", "base", "core", "cpu", "gpu", "cuda", "headless", "bin"}
_OWN_KEYS = {"is", "bundles", "not-pypi"}


def normalize_pypi(name: str) -> str:
    """PEP 503 normalisation: lower case, runs of ``-_.`` become ``-``."""
    return _PEP503.sub("-", name.strip()).lower()


@dataclass(frozen=True)
class NameEntry:
    """``name`` (a normalised PyPI name) relates to ``conda_name`` by ``relation``."""

    name: str
    conda_name: str
    relation: str
    ecosystem: str = "pypi"


def _stripped(conda_norm: str) -> set[str]:
    out = {conda_norm}
    for prefix in ("py-", "python-"):
        out.add(conda_norm.removeprefix(prefix))
    for suffix in ("-py", "-python"):
        out.add(conda_norm.removesuffix(suffix))
    return out


def _words(name: str) -> frozenset[str]:
    words = set()
    for word in normalize_pypi(name).split("-"):
        for prefix in ("python", "py", "lib"):
            if word.startswith(prefix):
                if len(word) - len(prefix) >= 3:
                    word = word[len(prefix) :]
                break
        if word and word not in _GENERIC:
            words.add(word)
    return frozenset(words)


def classify(conda_name: str, pypi_names: Iterable[str]) -> dict[str, str]:
    """PyPI name (normalised) -> ``is`` / ``bundles`` for the distributions of one conda package."""
    names = sorted({normalize_pypi(n) for n in pypi_names if n and n.strip()})
    own = _stripped(normalize_pypi(conda_name))
    exact = {n for n in names if n in own}
    if exact:
        return {n: "is" if n in exact else "bundles" for n in names}
    words = _words(conda_name)
    if len(names) == 1:  # a package of one distribution: a rename unless the names share nothing
        (name,) = names
        compact, conda_compact = name.replace("-", ""), normalize_pypi(conda_name).replace("-", "")
        near = len(compact) >= 5 and (compact in conda_compact or conda_compact in compact)
        return {name: "is" if (words & _words(name)) or near else "bundles"}
    return {n: "is" if words and _words(n) == words else "bundles" for n in names}


def is_parselmouth(doc: Any) -> bool:
    """A conda name -> PyPI name(s) / ``null`` mapping (every value checked; conda has packages named
    ``id`` and ``affected``, so keys prove nothing, but no advisory format has only such values)."""
    if not isinstance(doc, dict) or not doc or is_own_table(doc):
        return False
    return all(
        v is None or isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
        for v in doc.values()
    )


def is_own_table(doc: Any) -> bool:
    """condavault's table layout (``is`` / ``bundles`` / ``not-pypi`` sections)."""
    return (
        isinstance(doc, dict)
        and bool(_OWN_KEYS & set(doc))
        and set(doc) <= _OWN_KEYS | {"description"}
        and all(isinstance(doc.get(k) or {}, dict | list) for k in _OWN_KEYS)
    )


def is_name_mapping(doc: Any) -> bool:
    return is_parselmouth(doc) or is_own_table(doc)


def parse_parselmouth(doc: Mapping[str, Any]) -> Iterator[NameEntry]:
    for conda_name, pypi in sorted(doc.items()):
        conda_name = str(conda_name).strip().lower()
        if not conda_name:
            continue
        if pypi is None:
            yield NameEntry(normalize_pypi(conda_name), conda_name, "not-pypi")
            continue
        for name, relation in classify(conda_name, [pypi] if isinstance(pypi, str) else pypi).items():
            yield NameEntry(name, conda_name, relation)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def parse_own_table(doc: Mapping[str, Any]) -> Iterator[NameEntry]:
    for name, conda_names in sorted((doc.get("is") or {}).items()):
        for conda_name in _as_list(conda_names):
            yield NameEntry(normalize_pypi(str(name)), conda_name.strip().lower(), "is")
    for conda_name, names in sorted((doc.get("bundles") or {}).items()):
        for name in _as_list(names):
            yield NameEntry(normalize_pypi(name), str(conda_name).strip().lower(), "bundles")
    not_pypi = doc.get("not-pypi") or []
    for conda_name in sorted(not_pypi if isinstance(not_pypi, list) else not_pypi.keys()):
        yield NameEntry(normalize_pypi(str(conda_name)), str(conda_name).strip().lower(), "not-pypi")


def parse_name_mapping(doc: Any) -> list[NameEntry]:
    """Entries of one mapping document (either layout), de-duplicated, in a stable order."""
    found = parse_parselmouth(doc) if is_parselmouth(doc) else parse_own_table(doc)
    return sorted(
        {e for e in found if e.name and e.conda_name and len(e.name) <= 200 and len(e.conda_name) <= 200},
        key=lambda e: (e.name, e.conda_name, e.relation),
    )
