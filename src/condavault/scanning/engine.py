"""The scan of one archive: one streaming pass over every member of both components.

Per regular file it computes the sha256 and size (checked against ``info/paths.json``, and against the
block list), runs the YARA rule set (and clamd when configured) over its bytes, and records the
install-time code it finds. The outcome is a :class:`ScanResult`: a verdict (``clean`` /
``suspicious`` / ``malicious``) with the rule and the file that fired first, every finding, and the
install-time properties stored per record (``has:post-link`` and friends).

Pure CPU apart from the optional clamd socket: no database, no writes (the stage around it does those).
"""

from __future__ import annotations

import bz2
import functools
import hashlib
import io
import json
import re
import socket
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import yara
from conda_package_streaming import package_streaming

from condavault.errors import ScannerUnavailable
from condavault.scanning.prefilter import build_prefilter

RULES_DIR = Path(__file__).parent / "rules"
SEVERITY = {"clean": 0, "info": 0, "suspicious": 1, "malicious": 2}
CHUNK = 1024 * 1024

_LINK_SCRIPT = re.compile(r"^(bin|Scripts)/\.(?P<name>[^/]+)-(?P<kind>pre-link|post-link|pre-unlink)\.(sh|bat)$")
_ACTIVATE = re.compile(r"^etc/conda/(?P<kind>activate|deactivate)\.d/[^/]+$")
_ENV_VARS = re.compile(r"^etc/conda/env_vars\.d/[^/]+\.json$")
_MENU = re.compile(r"^Menu/[^/]+\.json$")
_STARTUP = re.compile(r"(^|/)(site-packages/[^/]+\.pth|sitecustomize\.py|usercustomize\.py)$")
# env_vars.d variables that change what every process of the environment loads
WATCHED_VARS = (
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "DYLD_INSERT_LIBRARIES",
    "DYLD_LIBRARY_PATH",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PATH",
)
_IN_PREFIX = ("${CONDA_PREFIX}", "$CONDA_PREFIX", "%CONDA_PREFIX%", "@PREFIX@")


@functools.lru_cache(maxsize=8)
def _yara(sources: tuple[tuple[str, str], ...]) -> Any:
    """Compiled rules of ``sources`` (namespace, text), once per process: compiled rules are read-only and
    matched from several threads."""
    ext = {"filepath": "", "install_script": False, "startup_hook": False}
    return yara.compile(sources=dict(sources), externals=ext)


@dataclass
class Finding:
    rule: str
    verdict: str  # malicious | suspicious
    path: str | None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "verdict": self.verdict, "path": self.path, "detail": self.detail}


@dataclass
class ScanResult:
    ruleset: str
    findings: list[Finding] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        worst = max((SEVERITY[f.verdict] for f in self.findings), default=0)
        return {0: "clean", 1: "suspicious", 2: "malicious"}[worst]

    @property
    def top(self) -> Finding | None:
        """The finding that decides the verdict (the first of the worst kind)."""
        worst = [f for f in self.findings if f.verdict == self.verdict]
        return worst[0] if worst else None

    def to_dict(self) -> dict[str, Any]:
        top = self.top
        return {
            "verdict": self.verdict,
            "rule": top.rule if top else None,
            "path": top.path if top else None,
            "ruleset": self.ruleset,
            "findings": [f.to_dict() for f in self.findings],
            "properties": self.properties,
        }


def empty_properties() -> dict[str, Any]:
    return {
        "link_scripts": [],  # {"path", "kind"}: pre-link | post-link | pre-unlink
        "activate": [],
        "deactivate": [],
        "env_vars": [],  # {"path", "name", "value", "outside_prefix"}
        "menuinst": [],
        "entry_points": [],
        "startup_hooks": [],  # *.pth, sitecustomize: code every Python start runs
        "capabilities": [],  # network | exec, of install-time code
    }


def install_time_keys(props: dict[str, Any]) -> set[str]:
    """The kinds of install-time code a build has (the version diff compares these)."""
    out: set[str] = set()
    for ls in props.get("link_scripts", []):
        out.add(str(ls.get("kind")))
    for key in ("activate", "deactivate", "menuinst", "startup_hooks"):
        if props.get(key):
            out.add(key)
    if any(e.get("outside_prefix") for e in props.get("env_vars", [])):
        out.add("env_vars_outside_prefix")
    out.update(f"capability:{c}" for c in props.get("capabilities", []))
    return out


def has_tags(props: dict[str, Any]) -> list[str]:
    """Search tags (``has:<tag>``) of a build's properties."""
    tags = {str(ls.get("kind")) for ls in props.get("link_scripts", [])}
    for key, tag in (
        ("activate", "activate"),
        ("deactivate", "deactivate"),
        ("env_vars", "env-vars"),
        ("menuinst", "menuinst"),
        ("entry_points", "entry-points"),
        ("startup_hooks", "startup-hook"),
    ):
        if props.get(key):
            tags.add(tag)
    tags.update(props.get("capabilities", []))
    return sorted(tags)


class ClamdClient:
    """clamd's INSTREAM command over its socket (a path, or ``host:port``). One connection per file."""

    def __init__(self, address: str, timeout: float = 30.0) -> None:
        self.address = address
        self.timeout = timeout

    def _connect(self) -> socket.socket:
        if "/" in self.address or ":" not in self.address:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(self.address)
            return sock
        host, _, port = self.address.rpartition(":")
        return socket.create_connection((host.strip("[]"), int(port)), timeout=self.timeout)

    def scan(self, data: bytes) -> str | None:
        """The signature name clamd reports for ``data``, or None when it is clean."""
        with self._connect() as sock:
            sock.sendall(b"zINSTREAM\0")
            view = memoryview(data)
            for i in range(0, len(view), CHUNK):
                part = view[i : i + CHUNK]
                sock.sendall(struct.pack("!I", len(part)) + part)
            sock.sendall(struct.pack("!I", 0))
            reply = b""
            while not reply.endswith(b"\0"):
                got = sock.recv(4096)
                if not got:
                    break
                reply += got
        text = reply.rstrip(b"\0").decode("utf-8", "replace").strip()
        if text.endswith("FOUND"):
            return text.removeprefix("stream:").strip().removesuffix("FOUND").strip() or "clamav"
        if text.endswith("OK"):
            return None
        raise OSError(f"clamd answered {text!r}")

    def ping(self) -> bool:
        with self._connect() as sock:
            sock.sendall(b"zPING\0")
            return sock.recv(64).startswith(b"PONG")


SCRIPT_EXTS = frozenset(
    {
        ".py",
        ".pyw",
        ".pyx",
        ".pth",
        ".sh",
        ".bash",
        ".zsh",
        ".csh",
        ".tcsh",
        ".fish",
        ".ksh",
        ".bat",
        ".cmd",
        ".ps1",
        ".psm1",
        ".vbs",
        ".js",
        ".mjs",
        ".cjs",
        ".pl",
        ".pm",
        ".rb",
        ".php",
        ".lua",
        ".r",
        ".tcl",
        ".awk",
    }
)


def is_script(path: str, data: bytes) -> bool:
    """Code something may run: a script or source by its extension, a file without one (``bin/foo``), or
    one starting with ``#!``. Documentation and data files are not (the text rules skip them)."""
    base = path.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return data.startswith(b"#!") or dot <= 0 or base[dot:].lower() in SCRIPT_EXTS


class RuleSet:
    """The compiled YARA rules and their version: the sha256 of their sources, stored with every verdict,
    so a rescan knows which verdicts predate a rule change.

    The shipped rules come in three files by scope, so each file is matched only against what its rules
    are about (the cost of a scan is mostly the bytes each rule set reads): ``install.yar`` against
    install-time code (link scripts, activate.d/deactivate.d, startup hooks), ``text.yar`` against text
    scripts and sources (:func:`is_script`, no NUL byte in their first 8 KiB), ``any.yar`` against every
    file. Rules in ``extra_dir``
    (``scan_rules_dir``) are matched against every file."""

    SCOPES = ("install", "text", "any")  # text: scripts and sources (is_script), any: every other file

    def __init__(self, extra_dir: Path | None = None, cache_dir: Path | None = None) -> None:
        h = hashlib.sha256()
        by_scope: dict[str, dict[str, str]] = {scope: {} for scope in self.SCOPES}
        files = [(f.stem, f) for f in sorted(RULES_DIR.glob("*.yar"))]
        if extra_dir is not None and extra_dir.is_dir():
            files += [("any", f) for f in sorted(extra_dir.glob("*.yar"))]
        for i, (scope, f) in enumerate(files):
            text = f.read_text("utf-8")
            h.update(f.name.encode() + b"\0" + text.encode() + b"\0")
            by_scope[scope if scope in by_scope else "any"][f"ns{i}"] = text
        self.version = h.hexdigest()[:16]
        by_scope["text"].update(by_scope["any"])  # text files: the text rules and the rules for any file
        by_scope["install"].update(by_scope["text"])  # install-time code: every rule
        self.rules = {scope: _yara(tuple(src.items())) if src else None for scope, src in by_scope.items()}
        # install-time code (small files, rules with external conditions) always goes to YARA
        self.prefilter = build_prefilter(
            {s: list(by_scope[s].values()) for s in ("text", "any") if by_scope[s]}, cache_dir=cache_dir
        )

    def match(self, data: bytes, path: str, install_script: bool, startup_hook: bool) -> list[Any]:
        if install_script or startup_hook:
            scope = "install"
        elif b"\0" not in data[:8192] and is_script(path, data):
            scope = "text"
        else:
            scope = "any"
        rules = self.rules[scope]
        if rules is None:
            return []
        if scope != "install" and self.prefilter is not None and not self.prefilter.may_match(scope, data):
            return []  # no string of any rule of the scope occurs: no rule can match (see prefilter.py)
        return list(
            rules.match(
                data=data,
                externals={"filepath": path, "install_script": install_script, "startup_hook": startup_hook},
                timeout=60,
            )
        )


class Scanner:
    def __init__(self, ruleset: RuleSet, *, clamd: ClamdClient | None = None, max_file_bytes: int = 64 << 20) -> None:
        self.ruleset = ruleset
        self.clamd = clamd
        self.max_file_bytes = max_file_bytes

    def start(self) -> ScanPass:
        """A pass fed member by member (by the ingest's archive walk: one pass, not two)."""
        return ScanPass(self)

    def scan(
        self, source: Path | bytes, filename: str, sha256: str, blocked: Callable[[set[str]], set[str]] | None = None
    ) -> ScanResult:
        """Scan one archive with a walk of its own (a rescan of a stored blob). ``blocked`` answers which
        of a set of sha256s are on the block list."""
        p = self.start()
        for component, member, read in _members(source, filename):
            p.visit(component, member, read)
        return p.finish(sha256, blocked)


class ScanPass:
    """The scan of one archive, fed member by member; :meth:`finish` gives the result."""

    def __init__(self, scanner: Scanner) -> None:
        self.scanner = scanner
        self.res = ScanResult(scanner.ruleset.version, properties=empty_properties())
        self.seen: dict[str, str] = {}  # member path -> component
        self.files: dict[str, tuple[str, int]] = {}  # payload path -> (sha256, size)
        self.info: dict[str, bytes] = {}

    def visit(self, component: str, member: Any, read: Callable[..., bytes]) -> None:
        res, name = self.res, member.name
        if name in self.seen:
            res.findings.append(
                Finding(
                    "duplicate-member",
                    "malicious",
                    name,
                    f"{name} appears twice in the archive ({self.seen[name]}, {component})",
                )
            )
        self.seen[name] = component
        if not member.isfile():
            return
        if component == "info":
            if name.startswith("info/") and member.size <= 32 << 20:
                self.info[name] = read()
                if name in ("info/recipe/meta.yaml", "info/paths.json"):
                    return
            self._scan_file(res, name, self.info.get(name), member.size, read, is_info=True)
            return
        self.files[name] = self._scan_file(res, name, None, member.size, read, is_info=False)

    def finish(self, sha256: str, blocked: Callable[[set[str]], set[str]] | None = None) -> ScanResult:
        res, files = self.res, self.files
        self._check_paths(res, self.info, files)
        self._properties(res, self.info)
        if blocked is not None:
            hits = blocked({sha256} | {sha for sha, _ in files.values()})
            if sha256 in hits:
                res.findings.insert(
                    0, Finding("blocklist", "malicious", None, f"the archive's sha256 {sha256} is blocked")
                )
            for path, (sha, _size) in files.items():
                if sha in hits:
                    res.findings.append(Finding("blocklist", "malicious", path, f"file sha256 {sha} is blocked"))
        return res

    # -- per file --------------------------------------------------------------------------------------
    def _scan_file(
        self, res: ScanResult, name: str, data: bytes | None, size: int, read: Callable[..., bytes], *, is_info: bool
    ) -> tuple[str, int]:
        props = res.properties
        link = _LINK_SCRIPT.match(name)
        act = _ACTIVATE.match(name)
        install_script = bool(link or act)
        startup = bool(_STARTUP.search(name))
        if link:
            props["link_scripts"].append({"path": name, "kind": link.group("kind")})
        elif act:
            props[act.group("kind")].append(name)
        elif _MENU.match(name):
            props["menuinst"].append(name)
        if startup and not is_info:
            props["startup_hooks"].append(name)
        scanner = self.scanner
        if data is None and size > scanner.max_file_bytes:
            h = hashlib.sha256()
            n = 0
            for chunk in _chunks(read):
                h.update(chunk)
                n += len(chunk)
            return h.hexdigest(), n
        if data is None:
            data = read()
        if _ENV_VARS.match(name):
            self._env_vars(res, name, data)
        try:
            matches = scanner.ruleset.match(data, name, install_script, startup)
        except yara.Error as exc:  # e.g. a timeout: the file could not be judged
            res.findings.append(Finding("scan-error", "suspicious", name, f"YARA: {exc}"[:300]))
            matches = []
        for m in matches:
            verdict = str(m.meta.get("verdict", "malicious"))
            cap = m.meta.get("capability")
            if cap:
                if cap not in props["capabilities"]:
                    props["capabilities"].append(str(cap))
                continue
            if verdict in ("malicious", "suspicious"):
                res.findings.append(Finding(f"yara:{m.rule}", verdict, name, str(m.meta.get("description", ""))))
        if scanner.clamd is not None and data:
            try:
                sig = scanner.clamd.scan(data)
            except OSError as exc:
                raise ScannerUnavailable(
                    f"clamd at {scanner.clamd.address} could not scan {name}: {exc}", member=name
                ) from None
            if sig:
                res.findings.append(Finding(f"clamav:{sig}", "malicious", name, "ClamAV signature"))
        return hashlib.sha256(data).hexdigest(), len(data)

    @staticmethod
    def _env_vars(res: ScanResult, name: str, data: bytes) -> None:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            res.findings.append(Finding("env-vars-invalid", "suspicious", name, "env_vars.d file is not JSON"))
            return
        if not isinstance(doc, dict):
            return
        for key, value in doc.items():
            text = str(value)
            outside = False
            if key.upper() in WATCHED_VARS:
                parts = (
                    [p for p in re.split(r"[:;]", text) if p and not p.startswith(("$", "%"))]
                    if key.upper() in ("PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH")
                    else [text]
                )
                outside = any(not p.startswith(_IN_PREFIX) for p in parts) or key.upper() in (
                    "LD_PRELOAD",
                    "DYLD_INSERT_LIBRARIES",
                    "PYTHONSTARTUP",
                )
            res.properties["env_vars"].append(
                {"path": name, "name": str(key)[:200], "value": text[:500], "outside_prefix": outside}
            )
            if outside:
                res.findings.append(
                    Finding(
                        "env-vars-outside-prefix",
                        "suspicious",
                        name,
                        f"{key} is set to {text[:200]!r}, outside the environment's prefix",
                    )
                )

    # -- structure -------------------------------------------------------------------------------------
    @staticmethod
    def _check_paths(res: ScanResult, info: dict[str, bytes], files: dict[str, tuple[str, int]]) -> None:
        raw = info.get("info/paths.json")
        if raw is None:
            return
        try:
            paths = json.loads(raw).get("paths") or []
        except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
            res.findings.append(Finding("paths-json-invalid", "suspicious", "info/paths.json", "not valid JSON"))
            return
        for p in paths:
            if not isinstance(p, dict) or p.get("path_type", "hardlink") != "hardlink":
                continue
            path = str(p.get("_path", ""))
            got = files.get(path)
            if got is None:
                continue  # a hard link member or a file of another kind: nothing to compare
            sha, size = got
            want_sha, want_size = p.get("sha256"), p.get("size_in_bytes")
            if want_sha and want_sha != sha:
                res.findings.append(
                    Finding(
                        "paths-json-mismatch", "malicious", path, f"sha256 {sha} differs from paths.json's {want_sha}"
                    )
                )
            elif isinstance(want_size, int) and want_size != size:
                res.findings.append(
                    Finding(
                        "paths-json-mismatch", "malicious", path, f"size {size} differs from paths.json's {want_size}"
                    )
                )
        declared = {str(p.get("_path")) for p in paths if isinstance(p, dict)}
        for path in files:
            if path not in declared and not path.startswith("info/"):
                res.findings.append(
                    Finding("undeclared-file", "suspicious", path, "a payload file paths.json does not list")
                )
                break

    @staticmethod
    def _properties(res: ScanResult, info: dict[str, bytes]) -> None:
        raw = info.get("info/link.json")
        if not raw:
            return
        try:
            link = json.loads(raw)
            eps = ((link.get("noarch") or {}).get("entry_points")) or []
        except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
            return
        if isinstance(eps, list):
            res.properties["entry_points"] = [str(e)[:500] for e in eps][:200]


def _chunks(read: Callable[..., bytes]) -> Iterator[bytes]:
    while chunk := read(CHUNK):
        yield chunk


def _members(source: Path | bytes, filename: str) -> Iterator[tuple[str, Any, Callable[..., bytes]]]:
    """(component, tar member, reader) for every member of both components."""
    if filename.endswith(".conda"):
        fh: BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
        with fh, zipfile.ZipFile(fh) as zf:
            comps = ("info", "pkg") if any(n.startswith("pkg-") for n in zf.namelist()) else ("info",)
            for component in comps:
                stream = package_streaming.stream_conda_component(filename, component=component, zf=zf)
                for tar, member in stream:
                    yield component, member, _reader(tar, member)
        return
    raw: BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    with raw, bz2.open(raw, "rb") as reader:
        for tar, member in package_streaming.tar_generator(reader):
            component = "info" if member.name.startswith("info/") else "pkg"
            yield component, member, _reader(tar, member)


def _reader(tar: Any, member: Any) -> Callable[..., bytes]:
    """``read()``: the whole member; ``read(n)``: its next ``n`` bytes (b"" at its end)."""
    state: dict[str, Any] = {}

    def read(n: int = -1) -> bytes:
        if "fh" not in state:
            state["fh"] = tar.extractfile(member)
        fh = state["fh"]
        return fh.read(n) if fh is not None else b""

    return read
