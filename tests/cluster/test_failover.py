"""A node of a 3-node R3 cluster dies mid-load: a follower, the ORDERS leader, the leader of every saga
bucket, the JetStream meta leader. A leader election is weather: the API keeps accepting orders (it
retries within its deadline), every accepted order completes, nothing is stuck, charged twice, left
reserved or dead-lettered, and no order answered 5xx exists anywhere.

One cluster and one set of service processes serve the four drills in turn; each drill audits its own
orders. The table is printed (pytest -s) for the closing note.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
import pytest_asyncio

from runner.jetstream.cluster import EmbeddedCluster
from runner.jetstream.embedded import free_port
from tests.cluster.harness import (
    SAGA_BUCKETS,
    DrillResult,
    config_for_cluster,
    drill,
    move_leaders,
    stream_leader,
)
from tests.conftest import ROOT, ServiceProcess

pytestmark = pytest.mark.asyncio(loop_scope="session")

RESULTS: list[DrillResult] = []


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(nodes=3, data_dir=tmp_path_factory.mktemp("cluster")) as running:
        yield running
    if RESULTS:
        header = (
            "| drill | POSTs | accepted | 5xx | completed | stuck | duplicate effects | phantoms | dead letters "
            "| recovery | slowest POST |"
        )
        print("\n" + header + "\n" + "|---" * 11 + "|\n" + "\n".join(r.row() for r in RESULTS), file=sys.stderr)


@pytest.fixture(scope="module")
def system_on_cluster(cluster: EmbeddedCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The three services as real processes at R3, connected with the cluster's URL list."""
    config = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "streams.yaml", config / "streams.yaml")
    shutil.copytree(ROOT / "flows", config / "flows")
    shutil.copytree(ROOT / "handlers", config / "handlers", ignore=shutil.ignore_patterns("__pycache__"))
    config_for_cluster(config)
    logs = tmp_path_factory.mktemp("logs")
    env = {"FLOWRUN_REPLICAS": "3", **{k: v for k, v in os.environ.items() if k.startswith("PYTHON")}}
    port = free_port()
    procs = [ServiceProcess("order", cluster.urls, config, logs / "order.log", http_port=port, env=env)]
    procs[0].wait_ready(60)  # provisions first: one process creates the R3 streams and buckets
    procs += [ServiceProcess(s, cluster.urls, config, logs / f"{s}.log", env=env) for s in ("inventory", "payment")]
    for proc in procs[1:]:
        proc.wait_ready(60)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for proc in procs:
            proc.close()


@pytest_asyncio.fixture(loop_scope="session")
async def admin(cluster: EmbeddedCluster) -> AsyncIterator[nats.NATS]:
    nc = await nats.connect(cluster.urls.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        yield nc
    finally:
        await nc.close()


def index_of(name: str) -> int:
    return int(name.removeprefix("n")) - 1


def check(result: DrillResult) -> None:
    RESULTS.append(result)
    a = result.audit
    assert a is not None
    print(result.row())
    assert len(result.accepted) >= 0.98 * len(result.posts), f"{result.server_errors} POSTs failed"
    assert a.lost == [], a.lost[:5]
    assert a.duplicate_effects == [], a.duplicate_effects[:5]
    assert a.completed == len(result.accepted)
    assert a.dead_letters == 0
    assert result.phantoms == []
    assert result.available_drop == a.completed


async def test_kill_a_follower(cluster: EmbeddedCluster, system_on_cluster: str, admin: nats.NATS) -> None:
    await move_leaders(admin, ("ORDERS", *SAGA_BUCKETS), "n1")
    meta = cluster.wait_for_leader()
    victim = next(i for i in (2, 1) if f"n{i + 1}" != meta)
    check(await drill("follower", cluster, system_on_cluster, lambda: victim))


async def test_kill_the_orders_leader(cluster: EmbeddedCluster, system_on_cluster: str, admin: nats.NATS) -> None:
    js = admin.jetstream()

    async def leader() -> int:
        return index_of(await stream_leader(js, "ORDERS"))

    victim = await leader()
    check(await drill("ORDERS leader", cluster, system_on_cluster, lambda: victim))


async def test_kill_the_saga_buckets_leader(cluster: EmbeddedCluster, system_on_cluster: str, admin: nats.NATS) -> None:
    orders_leader = await stream_leader(admin.jetstream(), "ORDERS")
    target = next(n for n in ("n1", "n2", "n3") if n != orders_leader)  # the buckets' election alone
    await move_leaders(admin, SAGA_BUCKETS, target)
    check(await drill("saga buckets' leader", cluster, system_on_cluster, lambda: index_of(target)))


async def test_kill_the_meta_leader(cluster: EmbeddedCluster, system_on_cluster: str, admin: nats.NATS) -> None:
    meta = cluster.wait_for_leader()
    check(await drill("meta leader", cluster, system_on_cluster, lambda: index_of(meta)))
