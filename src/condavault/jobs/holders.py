"""Who holds a lease: ``host:pid:nonce``. A holder on this host whose process is gone (``kill -9``) frees
its leases at once; a holder on another host is waited for until its lease expires."""

from __future__ import annotations

import os
import socket
import uuid

_node: str | None = None


def set_node_name(name: str | None) -> None:
    """This machine's name in leases (``node_name`` setting; default: the host name). Two machines must not
    share one: a holder of this node whose process is gone is taken for dead at once."""
    global _node
    _node = name or None


def node_name() -> str:
    return _node or socket.gethostname()


def new_holder() -> str:
    return f"{node_name()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_is_dead(holder: str | None) -> bool:
    """True for an empty holder and for one of this host whose process no longer exists."""
    if not holder:
        return True
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != node_name() or not pid_text.isdigit():
        return False  # another machine: wait for the lease to expire
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
