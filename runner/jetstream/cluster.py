"""A local JetStream cluster: N embedded nats-servers on loopback, routed together (`flowrun dev-cluster`, tests).

Replicated streams, leader elections and a node going away behave here as on a production cluster, so failover can
be tried on one machine. Node i (0-based) is named n{i+1}, keeps its store in <data_dir>/n{i+1} and is reachable on a
loopback client port; its monitoring port serves /jsz, which is how `start` knows JetStream has elected a meta leader.
"""

from __future__ import annotations

import json
import signal
import tempfile
import time
import urllib.request
from pathlib import Path

from runner.jetstream.embedded import EmbeddedServer, Routes, free_port

CLUSTER_NAME = "flowrun-dev"


class EmbeddedCluster:
    def __init__(
        self,
        nodes: int = 3,
        data_dir: str | Path | None = None,
        port: int | None = None,
        sync: str | None = None,
        name: str = CLUSTER_NAME,
    ):
        """`port` is n1's client port (node i gets port+i); None picks free ports."""
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="flowrun-cluster-")
        self.data_dir = Path(data_dir) if data_dir else Path(self._tmp.name)  # type: ignore[union-attr]
        self.name = name
        self.paused: set[int] = set()
        # Every port distinct: the kernel hands out free ports in sequence, so n1's port + i may well be one
        # it just gave out for a route.
        taken: set[int] = set()

        def fresh(wanted: int | None = None) -> int:
            chosen = wanted if wanted is not None else free_port()
            while chosen in taken:
                chosen = free_port()
            taken.add(chosen)
            return chosen

        client_ports = [fresh(port + i) if port else fresh() for i in range(nodes)]
        route_ports = [fresh() for _ in range(nodes)]
        self.nodes = [
            EmbeddedServer(
                port=client_ports[i],
                data_dir=self.data_dir / f"n{i + 1}",
                sync=sync,
                server_name=f"n{i + 1}",
                routes=Routes(name, route_ports[i], tuple(p for p in route_ports if p != route_ports[i])),
                monitor_port=fresh(),
            )
            for i in range(nodes)
        ]

    @property
    def url_list(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated, as `--nats` and NATS_URL take them."""
        return ",".join(self.url_list)

    def start(self, timeout: float = 30.0) -> EmbeddedCluster:
        """Start every node and wait until JetStream has a meta leader that every node knows and that counts every
        other node as a current peer: before that, placing a replicated stream can fail with "peer offline"."""
        try:
            for node in self.nodes:
                node.lock.acquire()  # refuse a store in use before starting anything
            for node in self.nodes:
                node.spawn()
            for node in self.nodes:
                node.wait_listening(timeout)
            leader = self.wait_for_leader(timeout)
            self._wait_for_peers(leader, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def meta_leader(self, i: int) -> str | None:
        """The JetStream meta leader as node i sees it (None: no leader yet, or the node does not answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.nodes[i].monitor_port}/jsz", timeout=1) as resp:
                return json.load(resp).get("meta_cluster", {}).get("leader") or None
        except (OSError, ValueError):
            return None

    def wait_for_leader(self, timeout: float = 30.0) -> str:
        """Wait until every running, unpaused node names the same meta leader; return its server name."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [i for i, n in enumerate(self.nodes) if n.proc and n.exit_code() is None and i not in self.paused]
            leaders = {self.meta_leader(i) for i in running}
            if len(leaders) == 1 and None not in leaders:
                return leaders.pop()  # type: ignore[return-value]
            time.sleep(0.1)
        raise TimeoutError(f"JetStream elected no meta leader within {timeout}s (see the nodes' nats-server.log)")

    def _wait_for_peers(self, leader: str, timeout: float) -> None:
        index = next(i for i, n in enumerate(self.nodes) if n.server_name == leader)
        others = {n.server_name for n in self.nodes} - {leader}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{self.nodes[index].monitor_port}/jsz"
                with urllib.request.urlopen(url, timeout=1) as resp:
                    replicas = json.load(resp).get("meta_cluster", {}).get("replicas") or []
            except (OSError, ValueError):
                replicas = []
            current = {r["name"] for r in replicas if r.get("current") and not r.get("offline")}
            if others <= current:
                return
            time.sleep(0.1)
        raise TimeoutError(f"JetStream meta leader {leader} did not see every peer current within {timeout}s")

    def kill(self, i: int) -> None:
        """SIGKILL node i: a crash, no goodbye to its peers."""
        self.nodes[i].kill()

    def restart(self, i: int, timeout: float = 30.0) -> None:
        """Stop node i if it runs, start it again on the same ports and store, and wait until it rejoins."""
        node = self.nodes[i]
        node.terminate()
        self.paused.discard(i)
        node.spawn()
        node.wait_listening(timeout)
        self.wait_for_leader(timeout)

    def pause(self, i: int) -> None:
        """SIGSTOP node i: alive to the OS, silent to its peers (a hung or partitioned server)."""
        self.nodes[i].send(signal.SIGSTOP)
        self.paused.add(i)

    def resume(self, i: int) -> None:
        self.nodes[i].send(signal.SIGCONT)
        self.paused.discard(i)

    def stop(self) -> None:
        for node in self.nodes:  # all at once: nodes stopped one by one would hold elections in between
            node.send(signal.SIGCONT)
            node.send(signal.SIGTERM)
        for node in self.nodes:
            node.stop()
        self.paused.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
