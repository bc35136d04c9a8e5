"""Channel naming rules."""

from __future__ import annotations

import re

from condavault.errors import InvalidName

CHANNEL_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,99}$")
RESERVED = {"t", "label", "api", "static"}
PRIVACY = ("public", "authenticated", "private")
# platform subdirs conda and rattler know: a channel of that name would be ambiguous in URLs
KNOWN_SUBDIRS = {
    "noarch",
    "emscripten-wasm32",
    "wasi-wasm32",
    "freebsd-64",
    "freebsd-arm64",
    "linux-32",
    "linux-64",
    "linux-aarch64",
    "linux-armv6l",
    "linux-armv7l",
    "linux-ppc64",
    "linux-ppc64le",
    "linux-riscv64",
    "linux-riscv32",
    "linux-s390x",
    "linux-loongarch64",
    "linux-ppc",
    "osx-64",
    "osx-arm64",
    "win-32",
    "win-64",
    "win-arm64",
    "zos-z",
}


def check_channel_name(name: str) -> str:
    if not CHANNEL_RE.match(name) or name in RESERVED or name in KNOWN_SUBDIRS:
        raise InvalidName(
            f"invalid channel name {name!r}: use lowercase letters, digits, '_' and '-', starting with a letter; "
            f"not a platform subdir name nor one of {sorted(RESERVED)}",
            name=name,
        )
    return name


def check_privacy(privacy: str) -> str:
    if privacy not in PRIVACY:
        raise InvalidName(f"privacy must be one of {', '.join(PRIVACY)}", code="invalid_privacy", privacy=privacy)
    return privacy
