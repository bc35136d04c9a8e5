"""A Hyperscan prefilter in front of YARA: a file none of whose rule strings can occur is not given to YARA.

YARA reads every byte of a file through its Aho-Corasick automaton of atoms; on text (Python sources,
scripts) the shipped rules' many short, lowercase atoms make that pass cost 4-6 ms per MB, five times what
the rest of the scan costs. Hyperscan matches all the strings of a scope at once in well under 1 ms per MB.

The prefilter is compiled from the rule sources themselves: every string of every rule of a scope (text
strings with their escapes, regular expressions, ``nocase``) goes into one Hyperscan database in
``HS_FLAG_PREFILTER`` mode, whose guarantee is that it reports *at least* every match the exact expression
would (it may report more, never fewer). A rule can only match a file when one of its strings occurs in it,
so a file where the database reports nothing cannot match any rule of the scope, and YARA is skipped for it.
A file where anything is reported goes to YARA as before, which decides.

The guarantee holds only for rules whose condition needs a string. It is checked when the prefilter is
built: a scope is prefiltered only when every one of its rules has strings and a condition that mentions
them and no rule-independent test (``filesize``, ``uint32(..)``, ``pe.``, ...); a string with a modifier
the translation does not know (``wide``, ``xor``, ``base64``, hex strings ...) also disables the prefilter
for its scope, and so does any rule from ``scan_rules_dir``. Without the ``hyperscan`` package (or on a CPU
it does not support) there is no prefilter: YARA reads every file.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

__all__ = ["Prefilter", "build_prefilter"]

log = logging.getLogger(__name__)

_RULE = re.compile(r"\b(?:(?:private|global)\s+)*rule\s+\w+[^{]*\{")
_STRING = re.compile(
    r"^\s*\$\w*\s*=\s*(?P<value>\"(?:[^\"\\]|\\.)*\"|/(?:[^/\\\n]|\\.)+/[is]*)(?P<mods>[ \t\w]*)$", re.M
)
_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", '"': b'"', "\\": b"\\"}
# the only words a prefiltered rule's condition may use besides its string references: anything else
# (filesize, uint32(..), modules, external variables, not, none, true ...) could match without a string
_CONDITION_WORDS = frozenset({"any", "all", "of", "them", "and", "or", "at", "in"})


def _needs_a_string(condition: str) -> bool:
    rest = re.sub(r"[$#@!]\w*\*?", " ", condition)
    words = re.findall(r"[A-Za-z_]\w*", rest)
    return ("$" in condition or "them" in words) and all(w in _CONDITION_WORDS for w in words)


def _text_bytes(literal: str) -> bytes:
    out = bytearray()
    i = 0
    body = literal[1:-1]
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        nxt = body[i + 1]
        if nxt == "x":
            out.append(int(body[i + 2 : i + 4], 16))
            i += 4
        else:
            out += _ESCAPES[nxt]
            i += 2
    return bytes(out)


def _expressions(sources: list[str]) -> list[tuple[bytes, bool]] | None:
    """(pattern, caseless) of every string of every rule, or None when a rule cannot be prefiltered."""
    out: list[tuple[bytes, bool]] = []
    for src in sources:
        src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
        src = re.sub(r"^\s*//.*$", "", src, flags=re.M)
        heads = list(_RULE.finditer(src))
        if len(heads) != len(re.findall(r"\brule\b", src)):
            return None  # "rule" somewhere a rule head was not recognised: do not guess
        for k, m in enumerate(heads):
            body = src[m.end() : heads[k + 1].start() if k + 1 < len(heads) else len(src)]
            body = body[: body.rfind("}")]
            if "strings:" not in body or "condition:" not in body:
                return None
            strings, _, condition = body.partition("condition:")
            if not _needs_a_string(condition):
                return None
            found = list(_STRING.finditer(strings))
            declared = len(re.findall(r"^\s*\$\w*\s*=", strings, re.M))
            if not found or len(found) != declared:
                return None  # a hex string or a form not translated
            for s in found:
                value, mods = s.group("value"), s.group("mods").split()
                if any(x not in ("nocase", "ascii") for x in mods):
                    return None
                caseless = "nocase" in mods
                if value.startswith('"'):
                    pattern = re.escape(_text_bytes(value))
                else:
                    body_re, _, flags = value[1:].rpartition("/")
                    pattern = body_re.encode()
                    caseless = caseless or "i" in flags
                out.append((pattern, caseless))
    return out


class Prefilter:
    """One Hyperscan database per prefiltered scope; :meth:`may_match` answers per file."""

    def __init__(self, hs: Any, dbs: dict[str, Any]) -> None:
        self._hs = hs
        self._dbs = dbs
        self._local = threading.local()

    @property
    def scopes(self) -> set[str]:
        return set(self._dbs)

    def may_match(self, scope: str, data: bytes) -> bool:
        """False only when no string of any rule of ``scope`` can occur in ``data`` (YARA can be skipped)."""
        db = self._dbs.get(scope)
        if db is None:
            return True
        scratches = getattr(self._local, "scratch", None)
        if scratches is None:
            scratches = self._local.scratch = {}
        scratch = scratches.get(scope)
        if scratch is None:
            scratch = scratches[scope] = self._hs.Scratch(db)
        hit = False

        def found(*_: Any) -> bool:
            nonlocal hit
            hit = True
            return True  # stop at the first match

        try:
            db.scan(data, match_event_handler=found, scratch=scratch)
        except self._hs.ScanTerminated:
            pass
        except self._hs.error:  # never decide "clean" on an error
            return True
        return hit


def build_prefilter(scopes: dict[str, list[str]], cache_dir: Path | None = None) -> Prefilter | None:
    """A prefilter for the scopes (name -> rule sources) that can have one; None without Hyperscan.
    ``cache_dir``: where compiled databases are kept between processes (compiling one takes about a second)."""
    try:
        import hyperscan
    except ImportError:
        return None
    dbs: dict[str, Any] = {}
    for scope, sources in scopes.items():
        exprs = _expressions(sources)
        if not exprs:
            continue
        try:
            dbs[scope] = _compiled(tuple(exprs), cache_dir)
        except Exception as exc:  # a pattern Hyperscan refuses, or no CPU support: YARA reads everything
            log.warning("no scan prefilter for a rule scope", extra={"scope": scope, "error": str(exc)[:200]})
    return Prefilter(hyperscan, dbs) if dbs else None


@functools.lru_cache(maxsize=8)
def _compiled(exprs: tuple[tuple[bytes, bool], ...], cache_dir: Path | None) -> Any:
    """The Hyperscan database of ``exprs``, once per process and, with ``cache_dir``, once per machine: a
    compiled database is read-only and shared by threads (each with its own scratch)."""
    import hyperscan

    key = hashlib.sha256(repr((getattr(hyperscan, "__version__", ""), exprs)).encode()).hexdigest()[:32]
    cached = cache_dir / f"scan-prefilter-{key}.hs" if cache_dir is not None else None
    if cached is not None:
        try:
            blob = cached.read_bytes()
            # Hyperscan does not check what it deserializes: the file carries the sha256 of its payload
            if len(blob) > 32 and hashlib.sha256(blob[32:]).digest() == blob[:32]:
                return hyperscan.loadb(blob[32:], hyperscan.HS_MODE_BLOCK)
        except FileNotFoundError:
            pass
        except Exception as exc:  # unreadable, or compiled for another CPU (a data folder moved): compile anew
            log.info("scan prefilter cache not used", extra={"path": str(cached), "error": str(exc)[:200]})
    flags = hyperscan.HS_FLAG_PREFILTER | hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_DOTALL
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(
        expressions=[p for p, _ in exprs],
        ids=list(range(len(exprs))),
        elements=len(exprs),
        flags=[flags | (hyperscan.HS_FLAG_CASELESS if c else 0) for _, c in exprs],
    )
    if cached is not None:
        payload = bytes(hyperscan.dumpb(db))
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f".{cached.name}.{os.getpid()}.{threading.get_ident()}")
            tmp.write_bytes(hashlib.sha256(payload).digest() + payload)
            os.replace(tmp, cached)  # whole or absent: a concurrent reader never sees half a file
        except OSError as exc:  # a read-only data folder: compile again next start
            log.info("scan prefilter not cached", extra={"path": str(cached), "error": str(exc)[:200]})
    return db
