"""Replicas against real servers: `validate --nats` counts the cluster and checks streams and buckets;
provisioning (`provision`, and `start`/`up` through Runtime) never lowers replicas unless explicitly allowed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from click.testing import CliRunner, Result
from nats.js import JetStreamContext

from runner.cli import main
from runner.config.loader import load_or_raise
from runner.config.model import Config
from runner.jetstream.cluster import EmbeddedCluster
from runner.jetstream.embedded import EmbeddedServer
from runner.jetstream.provision import plan_and_apply
from runner.serve.service import Runtime, RuntimeOptions

pytestmark = pytest.mark.asyncio(loop_scope="session")

STREAMS_YAML = """\
defaults:
  replicas: ${FLOWRUN_REPLICAS:-1}
streams:
  EVENTS:
    subjects: ["events.>"]
"""
FLOWS_YAML = """\
kv:
  STATE:
    history: 1
"""


async def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """The CLI in a worker thread: it runs its own event loop."""
    return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env, catch_exceptions=False)


def line_of(file: Path, needle: str) -> int:
    [hit] = [i for i, line in enumerate(file.read_text().splitlines(), 1) if needle in line]
    return hit


@pytest.fixture
def small_config(tmp_path: Path) -> Path:
    """One stream and one bucket, both taking their replicas from `defaults:`: little for 2 cores to replicate."""
    root = tmp_path / "small"
    (root / "flows").mkdir(parents=True)
    (root / "streams.yaml").write_text(STREAMS_YAML)
    (root / "flows" / "state.yaml").write_text(FLOWS_YAML)
    return root


def with_replicas(root: Path, replicas: int) -> Config:
    return load_or_raise(root, {"FLOWRUN_REPLICAS": str(replicas)})


@pytest_asyncio.fixture(loop_scope="session")
async def cluster_js(nats_cluster: EmbeddedCluster) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_cluster.url_list)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def replicas_on_server(js: JetStreamContext) -> dict[str, int]:
    return {name: (await js.stream_info(name)).config.num_replicas for name in ("EVENTS", "KV_STATE")}


# --- validate --nats ---


async def test_validate_counts_a_three_node_cluster_and_checks_streams_and_buckets(
    nats_cluster: EmbeddedCluster, config_copy: Path
) -> None:
    url = nats_cluster.nodes[0].url
    fits = await cli("validate", "--config", str(config_copy), "--nats", url, env={"FLOWRUN_REPLICAS": "3"})
    assert fits.exit_code == 0, fits.output

    streams, payment = config_copy / "streams.yaml", config_copy / "flows" / "payment.yaml"
    streams.write_text(
        streams.read_text().replace("    max_age: 30d\n    storage:", "    max_age: 30d\n    replicas: 4\n    storage:")
    )
    payment.write_text(
        payment.read_text().replace(
            "    history: 1\n    cache: 256\n", "    history: 1\n    replicas: 5\n    cache: 256\n"
        )
    )

    result = await cli("validate", "--config", str(config_copy), "--nats", url)

    assert result.exit_code == 1
    problems = [line for line in result.stderr.splitlines() if not line.endswith("problem(s) found")]
    assert len(problems) == 2, result.stderr
    orders = next(p for p in problems if "stream ORDERS" in p)
    bucket = next(p for p in problems if "KV bucket PAYMENTS" in p)
    assert orders.startswith(f"{streams}:{line_of(streams, 'replicas: 4')}:")  # the line to change
    assert bucket.startswith(f"{payment}:{line_of(payment, 'replicas: 5')}:")
    assert "wants 4 replicas" in orders and "only 3 JetStream server(s) can hold them" in orders
    assert "wants 5 replicas" in bucket


async def test_validate_against_a_single_server(nats_server: EmbeddedServer, config_copy: Path) -> None:
    result = await cli(
        "validate", "--config", str(config_copy), "--nats", nats_server.url, env={"FLOWRUN_REPLICAS": "3"}
    )
    assert result.exit_code == 1
    streams = config_copy / "streams.yaml"
    defaults_line = line_of(streams, "replicas: ${FLOWRUN_REPLICAS")
    problems = [line for line in result.stderr.splitlines() if "wants 3 replicas" in line]
    assert len(problems) == 9, result.stderr  # 5 streams and 4 buckets, all from `defaults:`
    assert all(p.startswith(f"{streams}:{defaults_line}:") for p in problems)


# --- provisioning never lowers replicas unless told to ---


async def test_provision_raises_replicas_but_reports_a_decrease_as_drift(
    cluster_js: JetStreamContext, small_config: Path
) -> None:
    await plan_and_apply(cluster_js, with_replicas(small_config, 1))
    raised = await plan_and_apply(cluster_js, with_replicas(small_config, 3))
    assert {c.what: c.kind for c in raised.changes} == {"stream EVENTS": "update", "kv STATE": "update"}
    assert await replicas_on_server(cluster_js) == {"EVENTS": 3, "KV_STATE": 3}

    for mode in ("verify", "create"):  # FLOWRUN_REPLICAS unset: the YAML says 1
        plan = await plan_and_apply(cluster_js, with_replicas(small_config, 1), mode)
        assert plan.pending == []
        assert sorted(c.what for c in plan.drift) == ["kv STATE", "stream EVENTS"]
        assert all("replicas 3 → 1" in c.detail and "--allow-replica-decrease" in c.detail for c in plan.drift)
    assert await replicas_on_server(cluster_js) == {"EVENTS": 3, "KV_STATE": 3}

    lowered = await plan_and_apply(cluster_js, with_replicas(small_config, 1), allow_replica_decrease=True)
    assert {c.what: c.kind for c in lowered.changes} == {"stream EVENTS": "update", "kv STATE": "update"}
    assert await replicas_on_server(cluster_js) == {"EVENTS": 1, "KV_STATE": 1}


async def test_provision_cli_and_runtime_keep_replicas_without_the_flag(
    nats_cluster: EmbeddedCluster, cluster_js: JetStreamContext, small_config: Path
) -> None:
    url, root = nats_cluster.urls, str(small_config)
    created = await cli("provision", "--nats", url, "--config", root, env={"FLOWRUN_REPLICAS": "3"})
    assert created.exit_code == 0, created.output

    refused = await cli("provision", "--nats", url, "--config", root)
    assert refused.exit_code == 2, refused.output
    assert "drift   stream EVENTS: replicas 3 → 1" in refused.stdout

    runtime = Runtime(with_replicas(small_config, 1), [], url)  # what `flowrun start`/`up` run
    await runtime.start()
    await runtime.stop()
    assert await replicas_on_server(cluster_js) == {"EVENTS": 3, "KV_STATE": 3}

    runtime = Runtime(with_replicas(small_config, 1), [], url, RuntimeOptions(allow_replica_decrease=True))
    await runtime.start()
    await runtime.stop()
    assert await replicas_on_server(cluster_js) == {"EVENTS": 1, "KV_STATE": 1}

    verify = await cli("provision", "--nats", url, "--config", root, "--mode", "verify", "--allow-replica-decrease")
    assert verify.exit_code == 0, verify.output
