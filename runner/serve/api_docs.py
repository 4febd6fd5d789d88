"""`GET /docs`: the OpenAPI document as one web page, rendered here from the same document /openapi.json serves.

Rendered on the server, so the page needs no script and nothing from the network: one HTML answer with
its stylesheet inline, allowed by its hash in the page's own Content-Security-Policy (and nothing else is).
Everything taken from the document is HTML-escaped: descriptions and schemas come from the YAML.
"""

from __future__ import annotations

import base64
import hashlib
import json
from html import escape
from typing import Any

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:70em;padding:1em 2em;color:#1d1f21}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
section.op{border:1px solid #d8dde3;border-radius:6px;margin:.8em 0;padding:.4em .9em}
.method{display:inline-block;min-width:4.2em;font-weight:700;color:#fff;border-radius:4px;text-align:center;
padding:.05em .4em;margin-right:.6em}.get{background:#2f6fb2}.post{background:#2e8b57}
code.path{font-size:1.05em;font-weight:600}.summary{color:#555;margin-left:.6em}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #e1e4e8;padding:.2em .6em;text-align:left;
vertical-align:top}td code{word-break:break-word}
pre{background:#f6f8fa;padding:.6em;overflow:auto;font-size:13px;margin:.3em 0}
summary{cursor:pointer}.status{font-weight:700}
"""
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'"


def render(doc: dict[str, Any]) -> str:
    """The page: the API's title, then each tag's operations, then the shared schemas."""
    info = doc["info"]
    components = doc.get("components", {})
    by_tag: dict[str, list[str]] = {tag["name"]: [] for tag in doc.get("tags", [])}
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for tag in operation.get("tags", ["other"]):
                by_tag.setdefault(tag, []).append(_operation(method, path, operation, components))
    descriptions = {tag["name"]: tag.get("description", "") for tag in doc.get("tags", [])}
    sections = "".join(
        f"<h2 id='tag-{_e(tag)}'>{_e(tag)}</h2><p>{_e(descriptions.get(tag, ''))}</p>{''.join(ops)}"
        for tag, ops in by_tag.items()
        if ops
    )
    schemas = "".join(
        f"<h3 id='schema-{_e(name)}'>{_e(name)}</h3>{_json(schema)}"
        for name, schema in components.get("schemas", {}).items()
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{_e(info['title'])}</title>"
        f"<style>{STYLE}</style></head><body><h1>{_e(info['title'])}</h1>"
        f"<p>{_e(info.get('description', ''))}</p><p>OpenAPI {_e(doc['openapi'])}, version {_e(info['version'])}: "
        "<a href='/openapi.json'>/openapi.json</a>.</p>"
        f"{sections}<h2>Schemas</h2>{schemas}</body></html>"
    )


def _operation(method: str, path: str, operation: dict[str, Any], components: dict[str, Any]) -> str:
    parts = [
        f"<section class='op' id='{_e(operation.get('operationId', ''))}'>",
        f"<span class='method {_e(method)}'>{_e(method.upper())}</span><code class='path'>{_e(path)}</code>",
        f"<span class='summary'>{_e(operation.get('summary', ''))}</span>",
    ]
    if "description" in operation:
        parts.append(f"<p>{_e(operation['description'])}</p>")
    if operation.get("parameters"):
        rows = "".join(
            f"<tr><td><code>{_e(p.get('name', p.get('$ref', '')))}</code></td><td>{_e(p.get('in', ''))}</td>"
            f"<td>{'required' if p.get('required') else ''}</td><td>{_e(p.get('description', ''))}</td>"
            f"<td><code>{_e(_compact(p.get('schema', {})))}</code></td></tr>"
            for p in (_resolve(p, components) for p in operation["parameters"])
        )
        header = "".join(f"<th>{name}</th>" for name in ("parameter", "in", "required", "description", "schema"))
        parts.append(f"<table><tr>{header}</tr>{rows}</table>")
    body = operation.get("requestBody")
    if body:
        for media_type, content in body.get("content", {}).items():
            parts.append(
                f"<details><summary>request body ({_e(media_type)})</summary>{_json(content['schema'])}</details>"
            )
    responses = operation.get("responses", {}).items()
    rows = "".join(_response(status, _resolve(response, components)) for status, response in responses)
    parts.append(f"<table><tr><th>status</th><th>answer</th></tr>{rows}</table></section>")
    return "".join(parts)


def _resolve(item: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """A parameter or response, its `#/components/<kind>/<name>` reference followed."""
    if "$ref" not in item:
        return item
    _, _, kind, name = item["$ref"].split("/", 3)
    return components[kind][name]


def _response(status: str, response: dict[str, Any]) -> str:
    schemas = "".join(
        f"<details><summary>{_e(media_type)}</summary>{_json(content.get('schema', {}))}</details>"
        for media_type, content in response.get("content", {}).items()
    )
    return f"<tr><td class='status'>{_e(status)}</td><td>{_e(response.get('description', ''))}{schemas}</td></tr>"


def _compact(schema: dict[str, Any]) -> str:
    return json.dumps(schema, ensure_ascii=False, separators=(",", ":"))


def _json(schema: Any) -> str:
    return f"<pre>{_e(json.dumps(schema, ensure_ascii=False, indent=2))}</pre>"


def _e(text: object) -> str:
    return escape(str(text), quote=True)
