"""A bounded schemathesis run over the OpenAPI schema, every case sent as an administrator and anonymously:
no request may end in a server error. Deterministic (derandomized), so it never flakes; broader runs:
``CONDAVAULT_FUZZ_EXAMPLES=100 CONDAVAULT_FUZZ_NEGATIVE=1 pytest tests/functional/test_schemathesis.py``."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.support.server import Server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

# Valid inputs (boundary values included) by default; invalid ones cost ~10x more to generate, so they are
# opt-in: CONDAVAULT_FUZZ_NEGATIVE=1 (the fuzzing found its 500s with valid-looking values)
EXAMPLES = {GenerationMode.POSITIVE: int(os.environ.get("CONDAVAULT_FUZZ_EXAMPLES", "8"))}
if os.environ.get("CONDAVAULT_FUZZ_NEGATIVE"):
    EXAMPLES[GenerationMode.NEGATIVE] = max(1, EXAMPLES[GenerationMode.POSITIVE] // 2)


def test_fuzzing_the_api_finds_no_server_errors(shared_server: Server) -> None:
    srv = shared_server
    srv.channel("fz-pub")
    schema = schemathesis.openapi.from_dict(httpx.get(f"{srv.url}/api/openapi.json").json())
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) > 60
    failures: list[str] = []
    cases: list[int] = []

    session = requests.Session()
    identities = {"admin": {"Authorization": f"Bearer {srv.admin_token}"}, "anonymous": {}}

    def fuzz(op: Any, mode: GenerationMode, examples: int) -> None:
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.generate],
        )
        @given(case=op.as_strategy(generation_mode=mode))
        def call(case: schemathesis.Case) -> None:
            for who, headers in identities.items():  # each case as both callers: generating costs most
                try:
                    response = case.call(base_url=srv.url, session=session, headers=headers, timeout=60)
                except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, ValueError):
                    return  # the client refused to send it
                cases.append(response.status_code)
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.formatted_path} ({mode.value}, {who}): "
                        f"{response.status_code} {response.text[:200]} query={case.query} "
                        f"body={str(case.body)[:300]}"
                    )

        try:
            call()
        except Unsatisfiable:  # nothing invalid to generate for an operation without inputs
            pass

    for op in operations:
        for mode, examples in EXAMPLES.items():
            fuzz(op, mode, examples)
    print(f"schemathesis: {len(cases)} cases, {len(failures)} server errors")
    assert len(cases) > 600
    assert failures == []
