"""Secured NATS for every command (issue 7): each auth mode, for the CLI and for the Runtime.

Real nats-servers, configured per mode with credentials generated for this run (secured_nats.py). For every
mode `flowrun stream ls` and the Runtime connect; wrong credentials give exit 1 with the reason and no
traceback; no secret ever shows up in output or logs. Then: env vars, a comma-separated server list with a
dead first server, a nats CLI context, the YAML `connection:` block, and a user publishing where it may not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nkeys
import pytest
from click.testing import CliRunner, Result

from runner.cli import main
from runner.config.connection import ConnectionSpec
from runner.config.loader import load_or_raise
from runner.jetstream.connection import ConnectionFailed
from runner.jetstream.embedded import free_port
from runner.serve.service import Runtime, RuntimeOptions
from tests.conftest import ROOT, SEED_ORDER, System
from tests.integration.secured_nats import Operator, SecuredServer, TlsFiles, new_keypair

PASSWORD = "pw-Zq8vN3e7-alice"
WRONG_PASSWORD = "pw-wrong-Kd02xT"
TOKEN = "tok-5Yh2LwQe9"
WRONG_TOKEN = "tok-wrong-Pq1z"


@dataclass
class Mode:
    name: str
    server_config: str
    good: dict[str, Any]  # ConnectionSpec options; the CLI gets the matching flags
    bad: dict[str, Any]
    reason: str  # what the error for `bad` must say
    secrets: list[str] = field(default_factory=list)  # never printed, never logged


def _modes(tmp: Path) -> dict[str, Mode]:
    user_seed, user = new_keypair(nkeys.PREFIX_BYTE_USER)
    stranger_seed, _ = new_keypair(nkeys.PREFIX_BYTE_USER)
    (tmp / "user.nk").write_bytes(user_seed)
    (tmp / "stranger.nk").write_bytes(stranger_seed)
    operator = Operator()
    good_creds = operator.write_creds(tmp / "app.creds")
    foreign_account_seed, _ = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    foreign_creds = operator.write_creds(tmp / "foreign.creds", account_seed=foreign_account_seed)
    tls = TlsFiles(tmp)
    client_cert = {"tls_ca": str(tls.ca), "tls_cert": str(tls.client_cert), "tls_key": str(tls.client_key)}
    client_key_pem = tls.client_key.read_text().splitlines()[1]  # a line of the private key
    modes = [
        Mode(
            "user-password",
            f'authorization {{ users = [{{user: alice, password: "{PASSWORD}"}}] }}\n',
            {"user": "alice", "password": PASSWORD},
            {"user": "alice", "password": WRONG_PASSWORD},
            "authorization failed",
            [PASSWORD, WRONG_PASSWORD],
        ),
        Mode(
            "token",
            f'authorization {{ token: "{TOKEN}" }}\n',
            {"token": TOKEN},
            {"token": WRONG_TOKEN},
            "authorization failed",
            [TOKEN, WRONG_TOKEN],
        ),
        Mode(
            "nkey",
            f"authorization {{ users = [{{nkey: {user}}}] }}\n",
            {"nkey": str(tmp / "user.nk")},
            {"nkey": str(tmp / "stranger.nk")},
            "authorization failed",
            [user_seed.decode(), stranger_seed.decode()],
        ),
        Mode(
            "creds-jwt",
            operator.server_config(),
            {"creds": str(good_creds)},
            {"creds": str(foreign_creds)},
            "authorization failed",
            [line for p in (good_creds, foreign_creds) for line in p.read_text().splitlines() if line.startswith("SU")],
        ),
        Mode(
            "tls-client-cert",
            tls.server_config(),
            client_cert,
            {"tls_ca": str(tls.ca)},
            "the server wants a client certificate",
            [client_key_pem],
        ),
        Mode(
            "tls-handshake-first",
            tls.server_config(handshake_first=True),
            {**client_cert, "tls_handshake_first": True},
            client_cert,
            "needs --tls-first",
            [client_key_pem],
        ),
    ]
    return {m.name: m for m in modes}


@pytest.fixture(scope="module")
def modes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Mode]:
    return _modes(tmp_path_factory.mktemp("credentials"))


@pytest.fixture(
    scope="module",
    params=["user-password", "token", "nkey", "creds-jwt", "tls-client-cert", "tls-handshake-first"],
)
def secured(
    request: pytest.FixtureRequest, modes: dict[str, Mode], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Mode, SecuredServer]]:
    mode = modes[request.param]
    with SecuredServer(mode.server_config, data_dir=tmp_path_factory.mktemp(mode.name) / "nats") as server:
        yield mode, server


def flags(options: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for name, value in options.items():
        flag = "--tls-first" if name == "tls_handshake_first" else "--" + name.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return args


def flowrun(*args: str, env: dict[str, str] | None = None) -> Result:
    # NATS_* from the developer's shell must not leak into what is tested
    clean = {name: None for name in ("NATS_URL", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CONTEXT")}
    return CliRunner().invoke(main, list(args), env={**clean, **(env or {})})


def assert_clean_failure(result: Result, *expected: str) -> None:
    """Exit 1 with a one-line reason: click's error, not a traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.output, result.output


def assert_no_secret(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret leaked into: {text}"


def test_cli_connects_in_each_mode(secured: tuple[Mode, SecuredServer]) -> None:
    mode, server = secured
    result = flowrun("stream", "ls", "--nats", server.url, *flags(mode.good))
    assert result.exit_code == 0, result.output
    assert "STREAM" in result.output
    assert_no_secret(result.output, mode.secrets)


def test_cli_wrong_credentials_fail_cleanly_in_each_mode(secured: tuple[Mode, SecuredServer]) -> None:
    mode, server = secured
    result = flowrun("stream", "ls", "--nats", server.url, *flags(mode.bad))
    assert_clean_failure(result, f"cannot connect to NATS at {server.url}", mode.reason)
    assert_no_secret(result.output, mode.secrets)


async def test_runtime_connects_in_each_mode(
    secured: tuple[Mode, SecuredServer], caplog: pytest.LogCaptureFixture
) -> None:
    mode, server = secured
    caplog.set_level(logging.DEBUG)
    spec = ConnectionSpec.from_url(server.url).overridden_by(mode.good)
    config = load_or_raise(ROOT, {})
    runtime = Runtime(config, list(config.services), spec, RuntimeOptions(http_port=0))
    try:
        await runtime.start()
        assert runtime.nc is not None and runtime.nc.is_connected
        # end to end through the secured connection: the seed order completes
        async with aiohttp.ClientSession() as http:
            system = System(runtime, runtime.http_urls[0], http)
            status, body = await system.post_order(SEED_ORDER)
            assert status == 202, body
            assert (await system.wait_terminal(body["orderId"]))["status"] == "completed"
    finally:
        await runtime.stop()
    wrong = ConnectionSpec.from_url(server.url).overridden_by(mode.bad)
    with pytest.raises(ConnectionFailed) as failed:
        await Runtime(load_or_raise(ROOT, {}), ["payment"], wrong, RuntimeOptions()).start()
    assert mode.reason in str(failed.value)
    assert_no_secret(f"{caplog.text}\n{failed.value}\n{spec!r}\n{spec.describe()}", mode.secrets)


# --- one server with users: a full one and two restricted ones ---

USERS = f"""authorization {{
  users = [
    {{user: alice, password: "{PASSWORD}"}}
    {{user: lister, password: "{PASSWORD}", permissions: {{publish: {{allow: [">"], deny: ["$JS.API.STREAM.LIST"]}}}}}}
    {{user: reserver, password: "{PASSWORD}",
      permissions: {{publish: {{allow: [">"], deny: ["orders.inventory.reserved"]}}}}}}
  ]
}}
"""


@pytest.fixture(scope="module")
def users_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredServer]:
    with SecuredServer(USERS, data_dir=tmp_path_factory.mktemp("users") / "nats") as server:
        yield server


def test_env_vars_and_a_dead_first_server(users_server: SecuredServer) -> None:
    """The nats CLI's variables, and a server list whose first entry is down (nats-py would take the whole
    string for one URL)."""
    servers = f"nats://127.0.0.1:{free_port()},{users_server.url}"
    env = {"NATS_URL": servers, "NATS_USER": "alice", "NATS_PASSWORD": PASSWORD}
    result = flowrun("stream", "ls", env=env)
    assert result.exit_code == 0, result.output
    wrong = flowrun("stream", "ls", env={**env, "NATS_PASSWORD": WRONG_PASSWORD})
    assert_clean_failure(wrong, "authorization failed")
    assert_no_secret(result.output + wrong.output, [PASSWORD, WRONG_PASSWORD])


def test_nats_context_and_flags_over_it(users_server: SecuredServer, tmp_path: Path) -> None:
    contexts = tmp_path / "xdg" / "nats" / "context"
    contexts.mkdir(parents=True)
    context = {"url": users_server.url, "user": "alice", "password": WRONG_PASSWORD, "jetstream_domain": ""}
    (contexts / "secured.json").write_text(json.dumps(context))
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}

    stale = flowrun("stream", "ls", "--context", "secured", env=env)
    assert_clean_failure(stale, "authorization failed", users_server.url)
    fixed = flowrun("stream", "ls", "--context", "secured", env={**env, "NATS_PASSWORD": PASSWORD})
    assert fixed.exit_code == 0, fixed.output  # env beats the context, the context's user stays
    missing = flowrun("stream", "ls", "--context", "nope", env=env)
    assert_clean_failure(missing, "no such nats context", str(contexts / "nope.json"))
    assert_no_secret(stale.output + fixed.output, [PASSWORD, WRONG_PASSWORD])


def test_yaml_connection_block(users_server: SecuredServer, config_copy: Path) -> None:
    """streams.yaml's `connection:` with ${VARS}: `provision` and `validate` need no connection flag."""
    block = "connection:\n  servers: ${TEST_NATS_URL}\n  user: alice\n  password: ${TEST_NATS_PASSWORD}\n"
    streams = config_copy / "streams.yaml"
    streams.write_text(streams.read_text() + "\n" + block)
    env = {"TEST_NATS_URL": users_server.url, "TEST_NATS_PASSWORD": PASSWORD}

    provisioned = flowrun("provision", "--config", str(config_copy), env=env)
    assert provisioned.exit_code == 0, provisioned.output
    listed = flowrun("stream", "ls", "--config", str(config_copy), env=env)
    assert listed.exit_code == 0, listed.output
    assert "ORDERS" in listed.output
    overridden = flowrun("stream", "ls", "--config", str(config_copy), "--password", WRONG_PASSWORD, env=env)
    assert_clean_failure(overridden, "authorization failed")  # a flag beats the YAML
    assert_no_secret(provisioned.output + listed.output + overridden.output, [PASSWORD, WRONG_PASSWORD])


def test_cli_permission_violation_names_the_subject(users_server: SecuredServer) -> None:
    result = flowrun("stream", "ls", "--nats", users_server.url, "--user", "lister", "--password", PASSWORD)
    assert_clean_failure(result, "permission denied", "may not publish to")
    assert '"$js.api.stream.list"' in result.output.lower()  # nats-py lower-cases server errors


async def test_runtime_permission_violation_is_logged_with_the_subject(
    users_server: SecuredServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The inventory service may not emit orders.inventory.reserved: the log says so, by subject."""
    caplog.set_level(logging.INFO, logger="flowrun")
    spec = ConnectionSpec(servers=(users_server.url,), user="reserver", password=PASSWORD)
    config = load_or_raise(ROOT, {})
    runtime = Runtime(config, list(config.services), spec, RuntimeOptions(http_port=0))

    def denied() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == "nats permission denied"]

    try:
        await runtime.start()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{runtime.http_urls[0]}/api/orders", json=SEED_ORDER) as resp:
                assert resp.status == 202
        deadline = time.monotonic() + 15
        while not denied() and time.monotonic() < deadline:  # noqa: ASYNC110 (polling the log capture)
            await asyncio.sleep(0.05)
    finally:
        await runtime.stop()
    assert denied(), caplog.text
    fields = denied()[0].fields  # type: ignore[attr-defined]
    assert fields == {"operation": "publish", "subject": "orders.inventory.reserved"}
    assert_no_secret(caplog.text, [PASSWORD])


def test_start_with_a_wrong_password_exits_1_without_traceback(users_server: SecuredServer) -> None:
    """The real process: `flowrun start` fails fast (it reconnects forever only once connected)."""
    proc = subprocess.run(
        [sys.executable, "-m", "runner.cli", "start", "--service", "payment", "--nats", users_server.url, "-v"],
        env={"PATH": "/usr/bin:/bin", "NATS_USER": "alice", "NATS_PASSWORD": WRONG_PASSWORD},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "authorization failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert_no_secret(proc.stdout + proc.stderr, [WRONG_PASSWORD])
