"""Imports every domain's models so Alembic and ``Base.metadata`` see all tables."""

from condavault.airgap import models as _airgap  # noqa: F401
from condavault.audit import models as _audit  # noqa: F401
from condavault.auth import models as _auth  # noqa: F401
from condavault.channels import models as _channels  # noqa: F401
from condavault.db import secrets as _secrets  # noqa: F401
from condavault.db.base import Base
from condavault.indexing import models as _indexing  # noqa: F401
from condavault.jobs import models as _jobs  # noqa: F401
from condavault.mirror import models as _mirror  # noqa: F401
from condavault.scanning import models as _scanning  # noqa: F401
from condavault.search import models as _search  # noqa: F401
from condavault.signing import models as _signing  # noqa: F401
from condavault.vulns import models as _vulns  # noqa: F401

__all__ = ["Base"]
