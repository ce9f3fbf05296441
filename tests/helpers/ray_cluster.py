"""A real Ray cluster on this machine for tests: a head and a worker node of one CPU each, in a
private network namespace (only loopback), so that nothing Ray does leaves the machine.

Commands that talk to the cluster (drivers, `ray` itself) run inside that namespace through
`nsenter`; the worker node runs in a process group of its own, so a test can kill the node
whole, as a machine lost from a cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ADDRESS = "127.0.0.1:6379"  # the namespace is private: the default port is always free
RAY = str(Path(sys.executable).with_name("ray"))
ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
    # a killed node is found dead in seconds, not Ray's default half minute
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}
NODE_OPTIONS = ["--num-cpus=1", "--object-store-memory=200000000", "--disable-usage-stats"]
COUNT_NODES = (
    "import ray; ray.init(address=%r, log_to_driver=False); "
    "print(sum(1 for n in ray.nodes() if n['Alive']))"
)


def unshare_refused() -> str | None:
    """Why a private network namespace cannot be made here (None: it can)."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return "unshare/nsenter are not installed"
    done = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    return None if done.returncode == 0 else f"unshare -n is not permitted: {done.stderr.strip()}"


class RayCluster:
    def __init__(self) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # socket paths stay short
        self.holder = subprocess.Popen(
            ["unshare", "-n", "bash", "-c", "ip link set lo up && echo ready && exec sleep 1d"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != "ready":
            raise RuntimeError("the private network namespace did not come up")
        self.prefix = ["nsenter", "-t", str(self.holder.pid), "-n"]
        self.env = {**os.environ, **ENV}
        head = [RAY, "start", "--head", "--node-ip-address=127.0.0.1", "--port=6379"]
        self.run(*head, *NODE_OPTIONS, "--include-dashboard=false", f"--temp-dir={self.temp}")
        self.worker = self.start_worker()

    def command(self, *args: str) -> list[str]:
        """`args` as run inside the cluster's network namespace."""
        return [*self.prefix, *args]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.command(*args), capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if done.returncode != 0:
            raise AssertionError(f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def start_worker(self) -> subprocess.Popen[str]:
        """A second node, blocking in its own process group; returns once the head sees it."""
        worker = subprocess.Popen(
            self.command(RAY, "start", f"--address={ADDRESS}", *NODE_OPTIONS, "--block"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
        )
        self.wait_for_nodes(2, worker)
        return worker

    def kill_worker(self) -> None:
        """The worker node lost at once: its raylet, object store and workers SIGKILLed."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()

    def alive_nodes(self) -> int:
        python = sys.executable
        return int(self.run(python, "-c", COUNT_NODES % ADDRESS).stdout.split()[-1])

    def wait_for_nodes(self, count: int, worker: subprocess.Popen[str], limit: float = 120) -> None:
        deadline = time.monotonic() + limit
        while self.alive_nodes() != count:
            if worker.poll() is not None:
                raise AssertionError(f"the worker node exited {worker.returncode}")
            assert time.monotonic() < deadline, f"{count} nodes not up after {limit} s"

    def close(self) -> None:
        subprocess.run(self.command(RAY, "stop", "--force"), capture_output=True, env=self.env)
        if self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGKILL)
            self.worker.wait()
        self.holder.kill()
        self.holder.wait()
        shutil.rmtree(self.temp, ignore_errors=True)
