"""Property-based fuzzing of the API against its own OpenAPI document (schemathesis):
no request, however odd, gets a 5xx, and every answer fits the document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from riverbed.server import create_app
from riverbed.server.openapi import openapi_document
from riverbed.stores.sqlite import SqliteStore
from server_workflows.echo import Echo
from server_workflows.harness import serve_in_thread

TOKEN = "fuzzing-token-0123456789abcdef"
schema = schemathesis.openapi.from_dict(openapi_document(bearer=True))


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "runs.db"
    app = create_app([Echo(store=SqliteStore(path), workflow_name="echo")], token=TOKEN)
    with serve_in_thread(app) as url:
        yield url


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_never_fails_with_a_server_error(base_url: str, case: schemathesis.Case) -> None:
    if "name" in case.path_parameters and case.path_parameters["name"] != "echo":
        # half the cases name the served workflow, so they get past the 404
        case.path_parameters["name"] = "echo" if len(case.path_parameters["name"]) % 2 else "x"
    case.call_and_validate(
        base_url=base_url,
        headers={"authorization": f"Bearer {TOKEN}"},
        timeout=15,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
