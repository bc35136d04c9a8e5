"""Channel naming rules."""

from __future__ import annotations

import re

from condavault.errors import InvalidName
from condavault.packages.filename import is_subdir

CHANNEL_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,99}$")
RESERVED = {"t", "label", "api", "static"}
PRIVACY = ("public", "authenticated", "private")


def check_channel_name(name: str) -> str:
    if not CHANNEL_RE.match(name) or name in RESERVED or is_subdir(name):
        raise InvalidName(
            f"invalid channel name {name!r}: use lowercase letters, digits, '_' and '-', starting with a letter; "
            f"not a subdir name nor one of {sorted(RESERVED)}",
            name=name,
        )
    return name


def check_privacy(privacy: str) -> str:
    if privacy not in PRIVACY:
        raise InvalidName(f"privacy must be one of {', '.join(PRIVACY)}", code="invalid_privacy", privacy=privacy)
    return privacy
