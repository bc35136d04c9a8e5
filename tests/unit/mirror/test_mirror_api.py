"""The filter plugin API: exported names, protocols of the built-ins, registry rules."""

from __future__ import annotations

from typing import Any

import pytest

from condavault.mirror import closure, config, filters, plan
from condavault.mirror.filters import BUILTIN_FILTERS, Decision


@pytest.mark.parametrize("module", [filters, config, plan, closure])
def test_exported_members(module: Any) -> None:
    for name in module.__all__:
        assert hasattr(module, name), name


def test_builtins_implement_one_protocol_and_are_keyed_by_name() -> None:
    for name, cls in BUILTIN_FILTERS.items():
        assert cls.name == name
        kinds = [p for p in ("decide", "select", "readmit") if hasattr(cls, p)]
        assert len(kinds) == 1, name
        assert isinstance(cls.stage, int)
        assert cls.from_config(config.FilterConfig()) is None, name  # nothing is on by default
    assert [c.stage for c in BUILTIN_FILTERS.values()] == sorted(c.stage for c in BUILTIN_FILTERS.values())


def test_decision_shape() -> None:
    d = Decision(False, "exclude_specs", "openssl <3", "openssl 1.1.1w h7f8727e_2")
    assert (d.kept, d.filter, d.rule, d.value, d.flag) == (False, "exclude_specs", "openssl <3", d.value, False)
    bound = d.for_file(("linux-64", "openssl-1.1.1w-h7f8727e_2.conda"))
    assert bound.filename == "openssl-1.1.1w-h7f8727e_2.conda" and bound.subdir == "linux-64"


def test_plugin_cannot_shadow_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    class EP:
        name = "exclude_specs"

        @staticmethod
        def load() -> type[Any]:
            raise AssertionError("must not be loaded")

    monkeypatch.setattr(filters, "entry_points", lambda group: [EP])
    assert filters.registry()["exclude_specs"] is BUILTIN_FILTERS["exclude_specs"]
