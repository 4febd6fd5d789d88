"""Secured nats-servers for connection tests: users, tokens, NKEYs, an operator with JWTs, TLS.

Everything is generated per test — NKEYs with the `nkeys` package, JWTs signed the way nsc signs them
(ed25519 over `header.claims`, base64url), certificates with `trustme` — so no fixture file holds a key.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import nkeys
import trustme

from runner.jetstream.embedded import EmbeddedServer


class SecuredServer(EmbeddedServer):
    """The embedded nats-server (JetStream, loopback) with an auth or TLS block added to its config."""

    def __init__(self, extra_config: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.extra_config = extra_config

    def config_text(self) -> str:
        return super().config_text() + self.extra_config


def new_keypair(prefix: int) -> tuple[bytes, str]:
    """(seed, public key) of a fresh NKEY; prefix is nkeys.PREFIX_BYTE_USER, _ACCOUNT or _OPERATOR."""
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return seed, nkeys.from_seed(bytearray(seed)).public_key.decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def sign_jwt(issuer_seed: bytes, subject: str, name: str, nats_claims: dict[str, Any]) -> str:
    """A NATS JWT (v2): claims about `subject`, signed by the issuer's NKEY."""
    issuer = nkeys.from_seed(bytearray(issuer_seed))
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    claims = {
        "jti": base64.b32encode(secrets.token_bytes(20)).decode().rstrip("="),
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {**nats_claims, "version": 2},
    }
    body = _b64(json.dumps(claims).encode())
    return f"{header}.{body}.{_b64(issuer.sign(f'{header}.{body}'.encode()))}"


def creds_text(user_jwt: str, user_seed: bytes) -> str:
    """A .creds file as nsc writes it: the user JWT, then the user's NKEY seed."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user_seed.decode()}\n------END USER NKEY SEED------\n"
    )


class Operator:
    """An operator with one JetStream-enabled account, as `nsc` would set it up; users are issued by it."""

    ACCOUNT_LIMITS = {  # unlimited, JetStream on
        "subs": -1,
        "data": -1,
        "payload": -1,
        "imports": -1,
        "exports": -1,
        "wildcards": True,
        "conn": -1,
        "leaf": -1,
        "mem_storage": -1,
        "disk_storage": -1,
        "streams": -1,
        "consumer": -1,
    }

    def __init__(self) -> None:
        self.seed, self.public = new_keypair(nkeys.PREFIX_BYTE_OPERATOR)
        self.account_seed, self.account = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
        self.jwt = sign_jwt(self.seed, self.public, "flowrun-test", {"type": "operator"})
        self.account_jwt = sign_jwt(self.seed, self.account, "APP", {"type": "account", "limits": self.ACCOUNT_LIMITS})
        _, self.system = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)  # JetStream needs a system account
        self.system_jwt = sign_jwt(self.seed, self.system, "SYS", {"type": "account"})

    def server_config(self) -> str:
        return (
            f'operator: "{self.jwt}"\n'
            f"system_account: {self.system}\n"
            "resolver: MEMORY\n"
            f'resolver_preload: {{ {self.account}: "{self.account_jwt}", {self.system}: "{self.system_jwt}" }}\n'
        )

    def write_creds(self, path: Path, account_seed: bytes | None = None) -> Path:
        """A user of our account (or, given another account's seed, a user the server cannot trust)."""
        user_seed, user = new_keypair(nkeys.PREFIX_BYTE_USER)
        claims = {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
        path.write_text(creds_text(sign_jwt(account_seed or self.account_seed, user, "app", claims), user_seed))
        return path


class TlsFiles:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `directory`."""

    def __init__(self, directory: Path):
        ca = trustme.CA()
        self.ca = directory / "ca.pem"
        self.server_cert, self.server_key = directory / "server.pem", directory / "server-key.pem"
        self.client_cert, self.client_key = directory / "client.pem", directory / "client-key.pem"
        ca.cert_pem.write_to_path(str(self.ca))
        server = ca.issue_cert("127.0.0.1")
        server.cert_chain_pems[0].write_to_path(str(self.server_cert))
        server.private_key_pem.write_to_path(str(self.server_key))
        client = ca.issue_cert("flowrun-client@example.com")
        client.cert_chain_pems[0].write_to_path(str(self.client_cert))
        client.private_key_pem.write_to_path(str(self.client_key))

    def server_config(self, handshake_first: bool = False) -> str:
        return (
            "tls {\n"
            f"  cert_file: {json.dumps(str(self.server_cert))}\n"
            f"  key_file: {json.dumps(str(self.server_key))}\n"
            f"  ca_file: {json.dumps(str(self.ca))}\n"
            "  verify: true\n" + ("  handshake_first: true\n" if handshake_first else "") + "}\n"
        )
