"""The OpenAPI document is built from the YAML: valid OpenAPI 3.1, and saying what the YAML says."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from runner.config.loader import load_or_raise
from runner.config.model import Config, ServiceSpec
from runner.serve import api_docs
from runner.serve.openapi import document
from tests.conftest import ROOT
from tests.unit.test_config_errors import make, only

TRAVEL = ROOT / "examples" / "travel"


def http_service(root: Path) -> tuple[Config, ServiceSpec]:
    config = load_or_raise(root, dict(os.environ))
    (service,) = [s for s in config.services.values() if s.http is not None]
    return config, service


def order_document(served: frozenset[str] = frozenset()) -> dict[str, Any]:
    return document(*http_service(ROOT), served)


@pytest.mark.parametrize("root", [ROOT, TRAVEL], ids=["order", "travel"])
def test_the_document_is_valid_openapi_3_1_with_every_resource(root: Path) -> None:
    config, service = http_service(root)
    doc = document(config, service, frozenset())
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema or its rules
    assert doc["openapi"] == "3.1.0"
    assert service.http is not None
    for resource in service.http.resources.values():
        if resource.saga:
            key = config.sagas[resource.saga].key
            assert {"post", "get"} <= set(doc["paths"][resource.path])
            assert "get" in doc["paths"][f"{resource.path}/{{{key}}}"]
            assert "get" in doc["paths"][f"{resource.path}/{{{key}}}/events"]
            for command in resource.commands:
                assert "post" in doc["paths"][f"{resource.path}/{{{key}}}/{command}"]
        else:
            assert "get" in doc["paths"][f"{resource.path}/{{{resource.key}}}"]
    assert {"/healthz", "/readyz", "/openapi.json", "/docs"} <= set(doc["paths"])


def test_the_order_api_is_described_with_the_yaml_s_names_schema_and_errors() -> None:
    config, service = http_service(ROOT)
    doc = document(config, service, frozenset())
    create = doc["paths"]["/api/orders"]["post"]
    assert (
        create["requestBody"]["content"]["application/json"]["schema"] == service.http.resources["orders"].body_schema
    )
    assert {"$ref": "#/components/parameters/IdempotencyKey"} in create["parameters"]
    assert set(create["responses"]) == {"202", "400", "408", "413", "415", "422", "503"}
    assert doc["components"]["responses"]["Error503"]["headers"]["Retry-After"]
    listing = {p["name"]: p for p in doc["paths"]["/api/orders"]["get"]["parameters"]}
    assert set(listing) == {"state", "limit", "cursor"}
    assert set(listing["state"]["schema"]["enum"]) == {*config.sagas["order"].states, "compensating"}
    assert listing["limit"]["schema"]["maximum"] == 100
    get = doc["paths"]["/api/orders/{orderId}"]["get"]
    assert get["parameters"][0]["name"] == "orderId" and set(get["responses"]) == {"200", "400", "404", "503"}
    assert "409" in doc["paths"]["/api/orders/{orderId}/cancel"]["post"]["responses"]
    assert doc["paths"]["/api/inventory/{productId}"]["get"]["parameters"][0]["name"] == "productId"
    assert doc["components"]["schemas"]["Error"]["required"] == ["error"]


def test_metrics_is_described_only_where_it_is_served() -> None:
    assert "/metrics" not in order_document()["paths"]
    assert "/metrics" in order_document(frozenset({"/metrics"}))["paths"]


def test_the_docs_page_shows_every_operation_and_escapes_what_the_yaml_says() -> None:
    doc = order_document()
    doc["info"]["description"] = "<script>alert(1)</script>"
    page = api_docs.render(doc)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    for path in doc["paths"]:
        assert f"<code class='path'>{path}</code>" in page
    assert "src=" not in page and "http://" not in page and "https://" not in page  # nothing to fetch: offline


def test_a_resource_may_not_take_the_document_s_paths(config_copy: Path) -> None:
    p = make(config_copy)
    bucket = "          bucket: INVENTORY\n"
    p.replace("flows/order.yaml", bucket, bucket + "          path: /docs\n")
    only(p.problems(), "path /docs is the service's own")
