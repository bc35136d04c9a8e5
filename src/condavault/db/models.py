"""Imports every domain's models so Alembic and ``Base.metadata`` see all tables."""

import importlib

from condavault.auth import models as _auth  # noqa: F401
from condavault.channels import models as _channels  # noqa: F401
from condavault.db.base import Base
from condavault.indexing import models as _indexing  # noqa: F401

for _name in ("condavault.audit.models", "condavault.mirror.models", "condavault.vulns.models"):
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as _exc:
        if _exc.name != _name:
            raise

__all__ = ["Base"]
