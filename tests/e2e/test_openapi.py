"""/openapi.json and /docs on the real service, and property-based API tests generated from the document
(schemathesis) against it: no input, valid or not, gets a 5xx, and every answer is one the document describes.

Schemathesis is synchronous (requests): it runs in a thread while the event loop serves the API.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation.modes import GenerationMode

from runner.jetstream.embedded import EmbeddedServer
from runner.serve import api_docs
from runner.serve.openapi import document
from tests.conftest import ROOT, System, start_system

pytestmark = pytest.mark.asyncio(loop_scope="session")

MAX_EXAMPLES = 40  # per operation and generation mode: about 10 s for the order API
# Not `positive_data_acceptance`: an `accept:` function may refuse a schema-valid body (422, documented),
# e.g. a price with more than two decimal places.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def fuzz(doc: dict[str, Any], base_url: str) -> tuple[dict[str, int], list[str]]:
    """Cases sent per operation, and every failed check (with a curl line to reproduce it)."""
    schema = schemathesis.openapi.from_dict(doc)
    operations = sorted((r.ok() for r in schema.get_all_operations()), key=lambda op: not op.body)  # starts first
    sent: dict[str, int] = {}
    failures: list[str] = []
    created: dict[str, str] = {}  # a collection's path → an id it handed out: its items' operations run on it too
    with requests.Session() as session:

        def run(operation: Any, mode: GenerationMode, path_parameters: dict[str, str] | None = None) -> None:
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
            def send(case: Any) -> None:
                response = case.call(base_url=base_url, session=session, timeout=30)
                sent[operation.label] = sent.get(operation.label, 0) + 1
                if response.status_code == 202 and operation.body:
                    created.setdefault(operation.path, response.headers["location"][0].rsplit("/", 1)[-1])
                try:
                    case.validate_response(response, checks=CHECKS)
                except BaseExceptionGroup as group:
                    curl = case.as_curl_command()
                    failures.extend(
                        f"{operation.label} ({mode}): {exc}; to reproduce: {curl}" for exc in group.exceptions
                    )

            send()

        for operation in operations:
            run(operation, GenerationMode.POSITIVE)
            if operation.path_parameters or operation.query or operation.headers or operation.body:
                run(operation, GenerationMode.NEGATIVE)  # nothing to get wrong otherwise
            for collection, key in created.items():
                if operation.path.startswith(collection + "/{"):
                    (name,) = (p.name for p in operation.path_parameters)
                    run(operation, GenerationMode.POSITIVE, {name: key})
    return sent, failures


async def served_document(system: System) -> dict[str, Any]:
    status, doc = await system.get("/openapi.json")
    assert status == 200 and isinstance(doc, dict)
    return doc


async def no_server_errors(system: System, minimum_cases: int) -> None:
    sent, failures = await asyncio.to_thread(fuzz, await served_document(system), system.base)
    print(f"schemathesis: {sum(sent.values())} generated requests over {len(sent)} operations: {sent}")
    assert failures == []
    assert sum(sent.values()) >= minimum_cases


async def test_the_service_serves_its_document_and_an_offline_docs_page(system: System) -> None:
    doc = await served_document(system)
    validate(doc)
    service = system.runtime.config.services["order"]
    assert doc == document(system.runtime.config, service, frozenset(doc["paths"]))
    async with system.http.get(f"{system.base}/docs") as resp:
        page = await resp.text()
        assert resp.status == 200 and resp.content_type == "text/html"
        assert resp.headers["Content-Security-Policy"] == api_docs.CONTENT_SECURITY_POLICY
    assert "POST</span><code class='path'>/api/orders</code>" in page
    assert "src=" not in page and "https://" not in page
    async with system.http.get(f"{system.base}/healthz") as resp:  # the API's own strict policy is unchanged
        assert resp.headers["Content-Security-Policy"] == "default-src 'none'"


async def test_no_generated_request_gets_a_server_error_from_the_order_api(system: System) -> None:
    await no_server_errors(system, minimum_cases=300)


async def test_no_generated_request_gets_a_server_error_from_the_travel_api(nats_server: EmbeddedServer) -> None:
    system = await start_system(nats_server, ROOT / "examples" / "travel")
    try:
        await no_server_errors(system, minimum_cases=300)
    finally:
        await system.http.close()
        await system.runtime.stop()
