"""`flowrun graph`: the saga and the system as Mermaid and DOT, and the README's diagrams kept current."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from runner.cli import main

ROOT = Path(__file__).resolve().parents[2]
TRAVEL = ROOT / "examples" / "travel"
README_BLOCK = re.compile(r"<!-- flowrun graph (.*?) -->\n```mermaid\n(.*?)```\n<!-- end flowrun graph -->", re.S)


@pytest.fixture(autouse=True)
def shipped_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The YAML's ${VAR:-default}s as shipped: a timeout set in the environment would change the picture."""
    for yaml_file in [*ROOT.glob("flows/*.yaml"), *TRAVEL.glob("flows/*.yaml"), ROOT / "streams.yaml"]:
        for name in re.findall(r"\$\{(\w+)", yaml_file.read_text()):
            monkeypatch.delenv(name, raising=False)


def graph(*args: str, config: Path = ROOT) -> Result:
    return CliRunner().invoke(main, ["graph", "--config", str(config), *args], catch_exceptions=False)


def lines(result: Result) -> set[str]:
    assert result.exit_code == 0, result.output
    return {line.strip() for line in result.stdout.splitlines()}


def test_order_saga_as_mermaid_state_diagram() -> None:
    out = lines(graph("--saga", "order"))
    assert "stateDiagram-v2" in out
    assert "[*] --> pending : orders.created" in out
    assert "pending --> awaiting_payment : orders.inventory.reserved / emit orders.payment.requested" in out
    assert "awaiting_payment --> compensating : timeout 30s, undo" in out
    assert "awaiting_payment --> compensating : orders.payment.failed, undo" in out
    assert "compensating --> cancelled : all undone" in out
    assert "compensating --> compensation_failed : undo unconfirmed after 2m" in out
    assert "[*] --> failed : orders.created rejected" in out
    assert {"completed --> [*]", "cancelled --> [*]", "failed --> [*]", "compensation_failed --> [*]"} <= out
    assert "awaiting_payment --> [*]" not in out  # not terminal
    assert "payment undone by orders.payment.refund, confirmed by orders.payment.refunded" in out


def test_travel_saga_as_mermaid_and_dot() -> None:
    mermaid = lines(graph("--saga", "trip", config=TRAVEL))
    assert "[*] --> reserving_hotel : bookings.requested / emit bookings.hotel.reserve" in mermaid
    assert "booking_flight --> charging : bookings.flight.booked / emit bookings.billing.charge" in mermaid
    assert "charging --> confirmed : bookings.billing.charged" in mermaid
    assert "reserving_hotel --> compensating : timeout 30s, undo" in mermaid
    assert "compensating --> compensation_failed : undo unconfirmed after 1m" in mermaid
    assert "confirmed --> [*]" in mermaid
    dot = graph("--saga", "trip", "--format", "dot", config=TRAVEL)
    assert dot.exit_code == 0, dot.output
    assert dot.stdout.startswith('digraph "saga trip" {') and dot.stdout.rstrip().endswith("}")
    assert (
        '"booking_flight" -> "charging" [label="bookings.flight.booked / emit bookings.billing.charge"];' in dot.stdout
    )
    assert '"__start" -> "reserving_hotel" [label="bookings.requested / emit bookings.hotel.reserve"];' in dot.stdout
    assert '"confirmed" -> "__end";' in dot.stdout
    assert '"compensating" [label="compensating", shape=box, style="rounded,dashed"];' in dot.stdout


def test_order_saga_as_dot_has_every_transition_of_the_mermaid_picture() -> None:
    mermaid = [line for line in lines(graph("--saga", "order")) if " --> " in line and " : " in line]
    dot = graph("--saga", "order", "--format", "dot").stdout
    for line in mermaid:
        src, rest = line.split(" --> ")
        dst, label = rest.split(" : ")
        src = "__start" if src == "[*]" else src
        assert f'"{src}" -> "{dst}" [label="{label}"];' in dot


def test_system_flowchart_follows_messages_from_http_to_services() -> None:
    out = lines(graph())
    assert "flowchart LR" in out
    assert 'http__api_orders["POST /api/orders"]' in out
    assert 'http__api_orders_cancel["POST /api/orders/{orderId}/cancel"]' in out
    assert "http__api_orders --> subj_orders_created" in out
    assert "subj_orders_created --> stream_ORDERS" in out
    assert "stream_ORDERS --> con_inventory_service" in out
    assert "con_inventory_service --> svc_inventory" in out
    assert "svc_inventory --> subj_orders_inventory_reserved" in out
    assert "svc_order --> subj_orders_payment_requested" in out
    assert "svc_payment -.->|dead letters| stream_DLQ" in out
    assert graph("--system").stdout == graph().stdout


def test_system_as_dot() -> None:
    out = graph("--format", "dot", config=TRAVEL).stdout
    assert out.startswith('digraph "system" {')
    assert '"stream_BOOKINGS" [label="BOOKINGS", shape=cylinder];' in out
    assert '"subj_bookings_requested" -> "stream_BOOKINGS";' in out
    assert '"svc_booking" [label="booking", shape=component];' in out
    assert '-> "svc_booking";' in out


def test_unknown_saga_and_both_choices_are_usage_errors() -> None:
    unknown = graph("--saga", "ordr")
    assert unknown.exit_code == 2 and "unknown saga 'ordr'; declared: order" in unknown.output
    both = graph("--saga", "order", "--system")
    assert both.exit_code == 2 and "not both" in both.output


def test_readme_diagrams_are_generated_from_the_shipped_yaml() -> None:
    blocks = README_BLOCK.findall((ROOT / "README.md").read_text())
    assert len(blocks) == 2, "the README shows the order saga and the system"
    for args, shown in blocks:
        current = graph(*args.split()).stdout
        assert shown == current, (
            f"README's `flowrun graph {args}` is stale: paste the command's output between its markers"
        )
