"""ConnectionSpec without a server: sources, precedence, checks that name options, and no secret in sight."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.config.connection import DEFAULT_SERVERS, ConnectionOptionError, ConnectionSpec, names_servers, resolve
from runner.config.loader import load
from runner.jetstream.connection import PermissionDenied, permission_violation

SECRET = "s3cr3t-Vq9"


def write_context(home: Path, name: str, **values: object) -> dict[str, str]:
    folder = home / "nats" / "context"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(values))
    return {"XDG_CONFIG_HOME": str(home)}


def test_precedence_flags_env_context_yaml(tmp_path: Path) -> None:
    yaml = ConnectionSpec.from_mapping(
        {"servers": ["nats://yaml:4222"], "inbox_prefix": "_I.yaml", "user": "y", "password": "from-yaml"}
    )
    env = write_context(tmp_path, "ctx", url="nats://ctx:4222", inbox_prefix="_I.ctx", password="from-ctx")
    assert resolve({}, env, "ctx", yaml).servers == ("nats://ctx:4222",)
    assert (
        resolve({}, env, "ctx", yaml).password == "from-ctx"
    )  # same auth mode: the context's password, the YAML's user
    env["NATS_URL"] = "nats://env:4222"
    spec = resolve({"inbox_prefix": "_I.flag", "servers": None}, env, "ctx", yaml)
    assert spec.servers == ("nats://env:4222",)  # None is "not given": env stays
    assert spec.inbox_prefix == "_I.flag"
    assert spec.user == "y"  # nobody above the YAML named another user
    assert resolve({}, {}, None, None).servers == DEFAULT_SERVERS


def test_another_auth_mode_replaces_the_lower_one_and_a_password_alone_keeps_the_user() -> None:
    yaml = ConnectionSpec.from_mapping({"user": "alice", "password": "old"})
    assert resolve({"token": SECRET}, {}, None, yaml).auth_modes() == ["token"]
    spec = resolve({}, {"NATS_PASSWORD": SECRET}, None, yaml)
    assert (spec.user, spec.password) == ("alice", SECRET)


def test_env_names_comma_lists_and_booleans() -> None:
    spec = ConnectionSpec.from_env({"NATS_URL": "a:4222, nats://b:4223,", "NATS_TLS_FIRST": "true", "NATS_USER": ""})
    assert spec.servers == ("nats://a:4222", "nats://b:4223")
    assert spec.tls_handshake_first is True
    assert spec.user is None  # empty is unset, as in the nats CLI
    with pytest.raises(ConnectionOptionError, match="NATS_TLS_FIRST"):
        ConnectionSpec.from_env({"NATS_TLS_FIRST": "maybe"})


def test_secrets_stay_out_of_repr_describe_and_urls() -> None:
    spec = ConnectionSpec.from_url(f"nats://alice:{SECRET}@127.0.0.1:4222,nats://alice:{SECRET}@127.0.0.1:4223")
    assert (spec.user, spec.password) == ("alice", SECRET)
    token = ConnectionSpec.from_url(f"tls://{SECRET}@h:4222")
    assert token.token == SECRET and token.servers == ("tls://h:4222",)
    for shown in (repr(spec), spec.describe(), repr(token), token.describe()):
        assert SECRET not in shown
    assert spec.describe() == "nats://127.0.0.1:4222, nats://127.0.0.1:4223 (auth user/password)"
    assert token.describe() == "tls://h:4222 (auth token; tls)"
    with pytest.raises(ConnectionOptionError):
        ConnectionSpec(servers=(f"nats://a:{SECRET}@h:4222",))


def test_checks_name_the_option_not_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConnectionOptionError) as both:
        ConnectionSpec(token=SECRET, user="alice", password=SECRET).check()
    assert "not user/password and token" in str(both.value)
    missing = tmp_path / "nope.creds"
    with pytest.raises(ConnectionOptionError) as no_file:
        ConnectionSpec(creds=str(missing), tls_cert=str(missing)).check()
    message = str(no_file.value)
    assert f"--creds / NATS_CREDS: no such file {missing}" in message
    assert "--tls-cert / NATS_CERT and --tls-key / NATS_KEY go together" in message
    with pytest.raises(ConnectionOptionError, match="needs a password"):
        ConnectionSpec(user="alice").check()
    for error in (both.value, no_file.value):
        assert SECRET not in str(error)


def test_context_missing_or_broken(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    with pytest.raises(ConnectionOptionError, match="no such nats context") as missing:
        ConnectionSpec.from_context("prod", env)
    assert str(tmp_path / "nats" / "context" / "prod.json") in str(missing.value)
    write_context(tmp_path, "prod", url="nats://p:4222", creds="~/prod.creds", tls_first=True, description="x")
    spec = ConnectionSpec.from_context("prod", env)
    assert spec.creds == str(Path("~/prod.creds").expanduser())
    assert spec.tls_handshake_first is True
    (tmp_path / "nats" / "context" / "bad.json").write_text(f'{{"password": "{SECRET}"')
    with pytest.raises(ConnectionOptionError, match="not valid JSON") as broken:
        ConnectionSpec.from_context("bad", env)
    assert SECRET not in str(broken.value)
    with pytest.raises(ConnectionOptionError, match="not a context name"):
        ConnectionSpec.from_context("../etc", env)


def test_names_servers_decides_whether_up_embeds_a_server() -> None:
    assert not names_servers({}, {}, None, None)
    assert not names_servers({}, {}, None, ConnectionSpec.from_mapping({"user": "a", "password": "b"}))
    assert names_servers({}, {"NATS_URL": "nats://x:4222"})
    assert names_servers({}, {}, None, ConnectionSpec.from_mapping({"servers": "nats://x:4222"}))


def test_permission_violation_parsed_from_the_error_nats_py_reports() -> None:
    publish = permission_violation(Exception('nats: permissions violation for publish to "orders.x"'))
    assert publish == PermissionDenied("publish", "orders.x")
    subscribe = permission_violation(Exception('nats: permissions violation for subscription to "a.>" using queue'))
    assert subscribe == PermissionDenied("subscribe", "a.>")
    assert permission_violation(Exception("nats: 'authorization violation'")) is None


def test_yaml_connection_block_in_the_config(config_copy: Path) -> None:
    root = config_copy
    streams = root / "streams.yaml"
    block = (
        "connection:\n  servers: [nats://a:4222, nats://b:4222]\n  user: app\n  password: ${APP_PW}\n"
        "  creds: secrets/app.creds\n  connect_timeout: 500ms\n"
    )
    streams.write_text(streams.read_text() + "\n" + block)
    cfg, problems = load(root, {"APP_PW": "12345"})
    assert cfg is None
    assert [p.message for p in problems] == ["give one way to authenticate, not user/password and creds"]
    streams.write_text(streams.read_text().replace("  creds: secrets/app.creds\n", "  tls_ca: certs/ca.pem\n"))
    cfg, problems = load(root, {"APP_PW": "12345"})
    assert not problems, problems
    assert cfg is not None and cfg.connection is not None
    assert cfg.connection.servers == ("nats://a:4222", "nats://b:4222")
    assert cfg.connection.password == "12345"  # a number after ${} substitution is still a password
    assert cfg.connection.tls_ca == str(root / "certs" / "ca.pem")
    assert cfg.connection.connect_timeout == 0.5


def test_a_reset_after_the_tls_handshake_points_at_the_missing_client_certificate(tmp_path) -> None:
    # TLS 1.3: the server refuses a missing client certificate after the handshake, and the client may see
    # only a reset instead of the alert. The message must still say what to do.
    from runner.jetstream.connection import _reason

    ca = tmp_path / "ca.pem"
    ca.write_text("unused")
    spec = ConnectionSpec(servers=("nats://127.0.0.1:4222",), tls_ca=str(ca))
    reason = _reason(spec, [ConnectionResetError(104, "Connection reset by peer")])
    assert "the server wants a client certificate" in reason and "--tls-cert" in reason
    plain = ConnectionSpec(servers=("nats://127.0.0.1:4222",))
    assert "client certificate" not in _reason(plain, [ConnectionResetError(104, "Connection reset by peer")])
