"""A three-node RabbitMQ cluster on this machine, beside its own broker (which it leaves alone).

    python -m chaos.cluster start [--dir DIR]      start it, print the nodes' URLs (comma-separated)
    python -m chaos.cluster kill N | restart N     SIGKILL node N (1-3) | start it again
    python -m chaos.cluster status | stop          which nodes run | stop all, remove DIR

Each node is `/usr/lib/rabbitmq/bin/rabbitmq-server -detached` with an environment of its own
(its name, ports, data, logs, pid file), all of them under one folder (a new temp folder, or
DIR) holding the cluster's Erlang cookie as `HOME`; nodes 2 and 3 join node 1. Node names carry
a random tag and ports are free ones, so several clusters can run at once. `stop` shuts every
node down and deletes the folder: nothing is left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
STATE = "cluster.json"
DEFAULT_DIR = Path(tempfile.gettempdir()) / "mussikon-chaos-cluster"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Node:
    """One node: its Erlang name and ports, its files under the cluster's folder."""

    name: str
    amqp_port: int
    dist_port: int

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"


class Cluster:
    """The nodes of one cluster, all under `root` (its `cluster.json` says which)."""

    def __init__(self, root: Path, nodes: list[Node]) -> None:
        self.root, self.nodes = root, nodes

    @classmethod
    def create(cls, root: Path | None = None, size: int = 3) -> Cluster:
        """A new cluster's folder and names (nothing started yet)."""
        root = root or Path(tempfile.mkdtemp(prefix="mussikon-cluster-"))
        root.mkdir(parents=True, exist_ok=True)
        tag = secrets.token_hex(3)
        nodes = [Node(f"chaos{tag}n{n}@localhost", free_port(), free_port())
                 for n in range(1, size + 1)]
        cookie = root / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        (root / "enabled_plugins").write_text("[].\n")
        (root / "rabbitmq.conf").write_text("disk_free_limit.absolute = 50MB\n")
        cluster = cls(root, nodes)
        (root / STATE).write_text(json.dumps([asdict(node) for node in nodes]))
        return cluster

    @classmethod
    def load(cls, root: Path) -> Cluster:
        """The cluster whose folder is `root`."""
        try:
            nodes = [Node(**node) for node in json.loads((root / STATE).read_text())]
        except FileNotFoundError:
            raise SystemExit(f"no cluster in {root} (start one first)") from None
        return cls(root, nodes)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node(self, n: int) -> Node:
        """Node `n`, counted from 1."""
        if not 1 <= n <= len(self.nodes):
            raise SystemExit(f"NODE must be 1 to {len(self.nodes)}, got {n}")
        return self.nodes[n - 1]

    def _env(self, node: Node) -> dict[str, str]:
        here = self.root / node.name.split("@")[0]
        return {**os.environ, "HOME": str(self.root), "RABBITMQ_NODENAME": node.name,
                "RABBITMQ_NODE_PORT": str(node.amqp_port),
                "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_SERVER_START_ARGS": f"-kernel inet_dist_listen_min {node.dist_port} "
                                              f"inet_dist_listen_max {node.dist_port}",
                "RABBITMQ_MNESIA_BASE": str(here / "mnesia"),
                "RABBITMQ_LOG_BASE": str(here / "log"),
                "RABBITMQ_PID_FILE": str(here / "pid"),
                "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins")}

    def ctl(self, node: Node, *args: str, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """`rabbitmqctl -n NODE ARGS…` as this cluster."""
        done = subprocess.run([CTL, "-n", node.name, *args], env=self._env(node),
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {node.name} failed: "
                               f"{done.stderr.strip() or done.stdout.strip()}")
        return done

    def launch(self, node: Node) -> None:
        """Start a node and wait until it runs (rejoining its cluster if it was in one)."""
        subprocess.run([SERVER, "-detached"], env=self._env(node), check=True,
                       capture_output=True, timeout=60)
        deadline = time.monotonic() + 120
        while self.ctl(node, "await_startup", "--timeout", "60", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {node.name} did not start: see "
                                   f"{self.root / node.name.split('@')[0] / 'log'}")
            time.sleep(1)

    def start(self) -> None:
        """Start every node and join the others to the first."""
        first, *others = self.nodes
        self.launch(first)
        for node in others:
            self.launch(node)
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")

    def pid(self, node: Node) -> int | None:
        try:
            return int((self.root / node.name.split("@")[0] / "pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def running(self, node: Node) -> bool:
        pid = self.pid(node)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self, node: Node) -> None:
        """SIGKILL the node's Erlang VM, as a crash would."""
        pid = self.pid(node)
        if pid is not None and self.running(node):
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while self.running(node) and time.monotonic() < deadline:
                time.sleep(0.1)

    def restart(self, node: Node) -> None:
        """Start a killed node again; it rejoins the cluster."""
        self.kill(node)
        self.launch(node)

    def leader(self, queue: str) -> Node:
        """The node holding the leader of a quorum queue (asked of any node that runs)."""
        for node in self.nodes:
            if not self.running(node):
                continue
            done = self.ctl(node, "list_queues", "name", "leader", "--formatter", "json",
                            "--quiet", check=False)
            if done.returncode != 0:
                continue
            for row in json.loads(done.stdout or "[]"):
                if row["name"] == queue:
                    return next(n for n in self.nodes if n.name == row["leader"])
        raise RuntimeError(f"no running node knows the leader of queue {queue}")

    def members(self, queue: str) -> list[str]:
        """The nodes a quorum queue is replicated on."""
        node = next(n for n in self.nodes if self.running(n))
        done = self.ctl(node, "list_queues", "name", "members", "--formatter", "json", "--quiet")
        for row in json.loads(done.stdout or "[]"):
            if row["name"] == queue:
                return list(row["members"])
        raise RuntimeError(f"no queue {queue} on the cluster")

    def stop(self) -> None:
        """Shut every node down and delete the folder."""
        for node in reversed(self.nodes):
            if self.running(node) and self.ctl(node, "shutdown", check=False,
                                               timeout=60).returncode != 0:
                self.kill(node)
        shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop", "kill", "restart", "status"])
    parser.add_argument("node", nargs="?", type=int, help="1, 2 or 3 (kill, restart)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help=f"the cluster's folder (default {DEFAULT_DIR})")
    options = parser.parse_args(argv)
    if options.action in ("kill", "restart") and options.node is None:
        parser.error(f"{options.action} needs NODE (1-3)")
    if not Path(SERVER).exists():
        print(f"error: {SERVER} is not installed here", file=sys.stderr)
        return 1
    if options.action == "start":
        if (options.dir / STATE).exists():
            print(f"error: a cluster already runs in {options.dir} (stop it first)",
                  file=sys.stderr)
            return 1
        cluster = Cluster.create(options.dir)
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        print(",".join(cluster.urls))
        return 0
    cluster = Cluster.load(options.dir)
    if options.action == "stop":
        cluster.stop()
    elif options.action == "status":
        for n, node in enumerate(cluster.nodes, 1):
            print(f"{n} {node.name} {node.url} {'running' if cluster.running(node) else 'down'}")
    elif options.action == "kill":
        cluster.kill(cluster.node(options.node))
    else:
        cluster.restart(cluster.node(options.node))
    return 0


if __name__ == "__main__":
    sys.exit(main())
