"""Imports every domain's models so Alembic and ``Base.metadata`` see all tables."""

from condavault.auth import models as _auth  # noqa: F401
from condavault.channels import models as _channels  # noqa: F401
from condavault.db.base import Base
from condavault.indexing import models as _indexing  # noqa: F401

__all__ = ["Base"]
