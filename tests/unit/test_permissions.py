"""`flowrun permissions`: each service may publish only what it emits; the output is a config nats-server accepts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner.config.loader import load, load_or_raise
from runner.config.model import Config
from runner.config.subjects import matches
from runner.jetstream.embedded import server_binary
from runner.jetstream.permissions import PROVISIONER, UserPermissions, users
from runner.jetstream.permissions_render import password_variable, render
from tests.conftest import ROOT

SERVICES = ("order", "inventory", "payment", PROVISIONER)


@pytest.fixture(scope="module")
def config() -> Config:
    return load_or_raise(ROOT)


def by_user(cfg: Config, provision: str = "verify") -> dict[str, UserPermissions]:
    return {u.user: u for u in users(cfg, provision=provision)}


def may_publish(user: UserPermissions, subject: str) -> bool:
    return any(matches(g.subject, subject) for g in user.publish)


def may_subscribe(user: UserPermissions, subject: str) -> bool:
    return any(matches(g.subject, subject) for g in user.subscribe)


def test_each_service_publishes_exactly_the_events_it_emits(config: Config) -> None:
    perms = by_user(config)
    assert set(perms) == set(SERVICES)
    emitted_by = {
        "order": {"orders.created", "orders.payment.requested", "orders.inventory.release", "orders.payment.refund"},
        "inventory": {"orders.inventory.reserved", "orders.inventory.failed", "orders.inventory.released"},
        "payment": {"orders.payment.completed", "orders.payment.failed", "orders.payment.refunded"},
        PROVISIONER: set(),
    }
    every_event = set().union(*emitted_by.values())
    for user, own in emitted_by.items():
        assert {s for s in every_event if may_publish(perms[user], s)} == own, user


def test_services_write_only_their_buckets_and_read_only_their_inbox(config: Config) -> None:
    perms = by_user(config)
    assert may_publish(perms["inventory"], "$KV.INVENTORY.LAPTOP-001")
    assert may_publish(perms["order"], "$KV.ORDER_SAGA.o-1")
    assert not may_publish(perms["payment"], "$KV.ORDER_SAGA.o-1")  # cannot rewrite an order's state
    assert not may_publish(perms["order"], "$KV.INVENTORY.LAPTOP-001")
    assert may_publish(perms["order"], "$JS.API.DIRECT.GET.KV_INVENTORY.$KV.INVENTORY.LAPTOP-001")  # the view
    assert may_publish(perms["order"], "flowrun.timers.order.at.o-1")
    assert not may_publish(perms["order"], "flowrun.timers.order.fire")  # only the server fires timers
    assert may_publish(perms["payment"], "dlq.payment.orders.payment.requested")
    assert not may_publish(perms["payment"], "dlq.inventory.orders.created")
    assert may_publish(perms["payment"], "$JS.ACK.ORDERS.payment-service.1.2.3.4.5")
    assert not may_publish(perms["payment"], "$JS.ACK.ORDERS.order-service.1.2.3.4.5")
    assert not may_publish(perms["payment"], "$JS.API.CONSUMER.MSG.NEXT.ORDERS.order-service")
    for name in ("order", "inventory", "payment"):
        assert not may_publish(perms[name], "$JS.API.STREAM.PURGE.ORDERS")
        assert not may_publish(perms[name], "$JS.API.STREAM.MSG.DELETE.ORDERS")
        assert [g.subject for g in perms[name].subscribe] == [f"_INBOX_{name}.>"]
    assert not may_subscribe(perms["inventory"], "_INBOX_payment.abc.1")
    assert not may_subscribe(perms[PROVISIONER], "_INBOX_payment.abc.1")


def test_verify_rights_are_read_only_and_absent_with_provision_off(config: Config) -> None:
    verify, off = by_user(config, "verify")["payment"], by_user(config, "off")["payment"]
    assert may_publish(verify, "$JS.API.CONSUMER.INFO.ORDERS.order-service")  # verify reads every consumer
    assert not may_publish(off, "$JS.API.CONSUMER.INFO.ORDERS.order-service")
    assert may_publish(off, "$JS.API.CONSUMER.INFO.ORDERS.payment-service")
    extra = {g.subject for g in verify.publish} - {g.subject for g in off.publish}
    assert extra and all(".INFO." in s or ".DIRECT.GET." in s for s in extra), extra


def test_provisioner_administers_jetstream_but_cannot_forge_events(config: Config) -> None:
    admin = by_user(config)[PROVISIONER]
    assert may_publish(admin, "$JS.API.STREAM.CREATE.ORDERS")
    assert may_publish(admin, "$KV.INVENTORY.LAPTOP-001")  # seeds the demo data
    assert not may_publish(admin, "orders.payment.completed")
    assert not may_publish(admin, "$KV.ORDER_SAGA.o-1")


def test_undeclared_bucket_in_a_service_kv_list_is_a_validation_problem(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(ROOT / "flows", project / "flows")
    shutil.copytree(ROOT / "handlers", project / "handlers")
    shutil.copy(ROOT / "streams.yaml", project / "streams.yaml")
    payment = project / "flows" / "payment.yaml"
    payment.write_text(payment.read_text().replace("kv: [PAYMENTS]", "kv: [PAYMENTS, WALLETS]"))
    _, problems = load(project)
    assert any("KV bucket 'WALLETS' is not declared" in str(p) and "payment.yaml" in str(p) for p in problems)


def nats_server_accepts(text: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "auth.conf"
    conf.write_text(text + "\n")
    return subprocess.run([server_binary(), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30, env=env)


def test_server_config_parses_and_reads_passwords_from_the_environment(config: Config, tmp_path: Path) -> None:
    text = render(users(config), "server")
    assert "$FLOWRUN_PAYMENT_PASSWORD" in text
    env = {**os.environ, **{password_variable(u): "s3cret-" + u for u in SERVICES}}
    result = nats_server_accepts(text, tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    # An unset password is a config error, not an account without a password.
    env.pop("FLOWRUN_PAYMENT_PASSWORD")
    result = nats_server_accepts(text, tmp_path, env)
    assert result.returncode != 0 and "FLOWRUN_PAYMENT_PASSWORD" in result.stdout + result.stderr


def test_generated_passwords_are_fresh_and_parse(config: Config, tmp_path: Path) -> None:
    first, second = render(users(config), "server", True), render(users(config), "server", True)
    assert "$FLOWRUN_" not in first and first != second
    result = nats_server_accepts(first, tmp_path, dict(os.environ))
    assert result.returncode == 0, result.stdout + result.stderr


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", "permissions", "--config", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_cli_formats_and_errors() -> None:
    one = run_cli("--service", "payment", "--format", "json")
    assert one.returncode == 0, one.stderr
    (user,) = json.loads(one.stdout)["users"]
    assert user["user"] == "payment" and user["permissions"]["subscribe"]["allow"] == ["_INBOX_payment.>"]
    assert "orders.payment.completed" in user["permissions"]["publish"]["allow"]
    assert "password" not in user

    nsc = run_cli("--format", "nsc", "--service", "inventory")
    assert nsc.returncode == 0, nsc.stderr
    assert "nsc add user --name inventory" in nsc.stdout and "--allow-pub '$KV.INVENTORY.>'" in nsc.stdout

    unknown = run_cli("--service", "shipping")
    assert unknown.returncode == 2 and "unknown service 'shipping'" in unknown.stderr
    misuse = run_cli("--format", "json", "--generate-passwords")
    assert misuse.returncode == 2 and "--generate-passwords" in misuse.stderr
