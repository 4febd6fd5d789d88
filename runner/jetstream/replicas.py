"""How many JetStream servers the cluster behind a connection has, and which replicas it cannot hold.

A stream or bucket with R replicas needs R JetStream servers in the cluster it is placed in (the one we
are connected to). The client's INFO only lists client URLs (`connect_urls`): one per server on a
loopback cluster, but one per interface on servers listening on 0.0.0.0, and servers without
JetStream count too. So we ask the servers themselves: every server answers the account statistics
request `$SYS.REQ.ACCOUNT.PING.STATZ` (open to every account) with its name, cluster and whether
JetStream is on. If nobody answers (the import is disabled), the unique `connect_urls` are the answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from runner.config.model import Config
from runner.config.yamlsrc import Problem

STATZ = "$SYS.REQ.ACCOUNT.PING.STATZ"
ANSWER_WITHIN = 1.0  # seconds to wait for the servers' answers when fewer than expected arrive


@dataclass(frozen=True)
class Cluster:
    name: str | None  # None: a single server, not clustered
    servers: int  # JetStream servers that can hold a replica
    how: str  # how we know, for messages


def server_info(nc: Client) -> dict[str, Any]:
    """The INFO the connected server sent. nats-py keeps it private (`_server_info`) without a public
    accessor; this is the one place flowrun reads it."""
    return dict(nc._server_info or {})


async def cluster_of(nc: Client) -> Cluster:
    info = server_info(nc)
    name = info.get("cluster")
    if not name:
        return Cluster(None, 1, "a single server")
    urls = set(info.get("connect_urls") or ())
    servers = await _jetstream_servers(nc, name, expected=len(urls))
    if servers:
        return Cluster(name, len(servers), f"cluster {name}: JetStream on {', '.join(sorted(servers))}")
    return Cluster(name, max(len(urls), 1), f"cluster {name}: {len(urls)} client URL(s) advertised")


async def _jetstream_servers(nc: Client, cluster: str, expected: int) -> set[str]:
    """Names of the JetStream servers of `cluster` that answer a statz ping (all answer within ANSWER_WITHIN)."""
    answers: asyncio.Queue[Msg] = asyncio.Queue()
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=answers.put)
    seen: set[str] = set()
    servers: set[str] = set()
    try:
        await nc.publish(STATZ, json.dumps({"include_unused": True}).encode(), reply=inbox)
        deadline = time.monotonic() + ANSWER_WITHIN
        while len(seen) < max(expected, 1) and (left := deadline - time.monotonic()) > 0:
            try:
                msg = await asyncio.wait_for(answers.get(), left)
            except TimeoutError:
                break
            try:
                server = json.loads(msg.data).get("server") or {}
            except (ValueError, AttributeError):  # not a statz answer: ignore it
                continue
            seen.add(server.get("id", ""))
            if server.get("cluster") == cluster and server.get("jetstream"):
                servers.add(server.get("name") or server.get("id", "?"))
    finally:
        await sub.unsubscribe()
    return servers


def replica_problems(config: Config, cluster: Cluster) -> list[Problem]:
    """A problem, at the line the replicas come from, for each stream and bucket the cluster cannot hold."""
    wanted = [("stream", ("streams", s.name), s.replicas) for s in config.streams.values()]
    wanted += [("KV bucket", ("kv", b.name), b.replicas) for b in config.buckets.values()]
    return [
        config.replicas_at[key].problem(
            f"{kind} {key[1]} wants {replicas} replicas but only {cluster.servers} JetStream server(s) "
            f"can hold them ({cluster.how})"
        )
        for kind, key, replicas in wanted
        if replicas > cluster.servers
    ]


async def problems(nc: Client, config: Config) -> list[Problem]:
    """`flowrun validate --nats`: replicas of every stream and bucket against the connected cluster."""
    return replica_problems(config, await cluster_of(nc))
