"""Airflow's distributed topology as local processes, for tests: the shape of docker-compose.yml.

PostgreSQL holds Airflow's metadata (a database of its own) and the warehouse (another);
Redis (a database number of its own) is the Celery broker. The processes are the ones the
compose file runs: api-server, scheduler, dag-processor, triggerer and Celery workers, each
in a session of its own so that a test can kill one worker's whole process tree. Every
process is stopped on exit, also when the test fails.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import redis

from tests.airflow_env import BIN, airflow_env, run

PASSWORD = "topology-admin-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def poll(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.5) -> object:
    """Ask ``predicate`` until it returns something truthy. Airflow has no push notification for
    run states, so its REST API is polled (the way its own CLI and UI do)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class Topology:
    env: dict[str, str]
    home: Path
    api: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)
    token: str = ""

    # --- processes ---------------------------------------------------------------------------

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.home / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [str(BIN / "airflow"), *args],
            env=env or self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = proc
        return proc

    def log(self, name: str, tail: int = 3000) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {name}.log ---\n{self.log(name)}" for name in self.processes)

    def kill_tree(self, name: str) -> list[int]:
        """SIGKILL a process and all its descendants at once (a machine that dies takes all)."""
        self.killed.add(name)
        root = psutil.Process(self.processes[name].pid)
        victims = [root, *root.children(recursive=True)]
        known = {victim.pid for victim in victims}
        for candidate in psutil.process_iter():  # its session too: children that left the tree
            with suppress(psutil.Error, ProcessLookupError, PermissionError):
                if candidate.pid not in known and os.getsid(candidate.pid) == root.pid:
                    victims.append(candidate)
        for proc in victims:
            with suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        psutil.wait_procs(victims, timeout=30)
        self.processes[name].wait(timeout=30)
        return [proc.pid for proc in victims]

    def check_alive(self) -> None:
        """Fail at once, with the logs, when a process that should run has exited."""
        dead = [
            name
            for name, proc in self.processes.items()
            if proc.poll() is not None and name not in self.killed
        ]
        if dead:
            raise AssertionError(f"{', '.join(dead)} exited\n{self.logs()}")

    def owner_of(self, pid: int) -> str | None:
        """Which started process has ``pid`` in its tree."""
        try:
            chain = [psutil.Process(pid), *psutil.Process(pid).parents()]
        except psutil.NoSuchProcess:
            return None
        pids = {proc.pid for proc in chain}
        return next((name for name, proc in self.processes.items() if proc.pid in pids), None)

    def stop(self) -> None:
        """SIGTERM every process still running, with its whole session, then SIGKILL what is left.

        Each process was started in a session of its own, so while its leader runs, every
        process of that session is ours, also those that left the tree (a task runner whose
        parent exited). Processes are signalled through psutil handles, which check a process's
        start time: a pid reaped long ago (a worker killed by kill_tree) and reused by another
        test's server is never hit, as a bare ``os.killpg(old pid)`` could.
        """
        sessions = {proc.pid for proc in self.processes.values() if proc.poll() is None}
        victims: list[psutil.Process] = []
        for candidate in psutil.process_iter():
            with suppress(psutil.Error, ProcessLookupError, PermissionError):
                if os.getsid(candidate.pid) in sessions:
                    victims.append(candidate)
        for victim in victims:
            with suppress(psutil.NoSuchProcess):
                victim.terminate()
        _, alive = psutil.wait_procs(victims, timeout=30)
        for victim in alive:
            with suppress(psutil.NoSuchProcess):
                victim.kill()
        psutil.wait_procs(alive, timeout=30)
        for proc in self.processes.values():
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)

    # --- REST API ----------------------------------------------------------------------------

    def login(self) -> None:
        """A JWT from the api-server's own auth endpoint (the simple auth manager's user)."""
        reply = httpx.post(
            f"{self.api}/auth/token", json={"username": "admin", "password": PASSWORD}, timeout=30
        )
        reply.raise_for_status()
        self.token = reply.json()["access_token"]

    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.request(method, f"{self.api}/api/v2{path}", headers=headers, timeout=30, **kwargs)

    def trigger(self, dag_id: str, run_id: str, logical_date: str | None, conf: dict | None = None) -> dict:
        body = {"dag_run_id": run_id, "logical_date": logical_date, "conf": conf or {}}
        reply = self.call("POST", f"/dags/{dag_id}/dagRuns", json=body)
        assert reply.status_code in (200, 201), reply.text
        return reply.json()

    def run_state(self, dag_id: str, run_id: str) -> str:
        reply = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        reply.raise_for_status()
        return reply.json()["state"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        def finished() -> str | None:
            self.check_alive()
            state = self.run_state(dag_id, run_id)
            return state if state in ("success", "failed") else None

        try:
            state = poll(finished, timeout, f"{dag_id} run {run_id}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from exc
        assert state == "success", (
            f"{dag_id} run {run_id} ended {state}\n{self.task_states(dag_id, run_id)}\n{self.logs()}"
        )
        return state

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        reply = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        reply.raise_for_status()
        return reply.json()["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> str:
        return json.dumps(
            [
                (t["task_id"], t["map_index"], t["state"], t["try_number"])
                for t in self.task_instances(dag_id, run_id)
            ]
        )


def _redis_db() -> int:
    """A Redis database number nobody else is using right now (the server has 16)."""
    for number in random.sample(range(1, 16), 15):
        client = redis.Redis(host="127.0.0.1", port=6379, db=number)
        if client.dbsize() == 0:
            return number
    raise RuntimeError("every Redis database 1-15 is in use")


@contextmanager
def celery_topology(
    tmp_path: Path,
    *,
    metadata_url: str,
    warehouse_url: str,
    source_url: str,
    smtp_port: int,
    workers: int = 2,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Topology]:
    """Start the distributed topology; yields once the api-server answers and a user is logged in."""
    broker_db = _redis_db()
    broker = redis.Redis(host="127.0.0.1", port=6379, db=broker_db)
    api_port = free_port()
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"admin": PASSWORD}))
    env = airflow_env(tmp_path, warehouse_url=warehouse_url, source_url=source_url, smtp_port=smtp_port)
    meta = metadata_url.replace("postgresql+psycopg2://", "postgresql://")
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{broker_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{meta}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(24).hex(),
            "AIRFLOW__API__SECRET_KEY": os.urandom(24).hex(),
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            # A lost worker is noticed in seconds, not the default five minutes.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            # Only the runs a test triggers: no schedules.
            "RETENTION_NIGHTLY_SCHEDULE": "none",
            "RETENTION_DELIVERY_SCHEDULE": "none",
            "RETENTION_TEMPLATES_SCHEDULE": "none",
            **(extra_env or {}),
        }
    )
    home = tmp_path / "processes"
    home.mkdir()
    topology = Topology(env=env, home=home, api=f"http://127.0.0.1:{api_port}")
    try:
        broker.flushdb()
        run([str(BIN / "airflow"), "db", "migrate"], env)
        topology.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(api_port))
        topology.start("scheduler", "scheduler")
        topology.start("dag-processor", "dag-processor")
        topology.start("triggerer", "triggerer")
        for n in range(1, workers + 1):
            worker_env = {**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
            topology.start(
                f"worker{n}",
                "celery",
                "worker",
                "--concurrency",
                "1",
                "--celery-hostname",
                f"worker{n}@%h",
                env=worker_env,
            )

        def api_up() -> bool:
            topology.check_alive()
            try:
                return httpx.get(f"{topology.api}/api/v2/monitor/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            poll(api_up, 240, "the api-server")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{topology.logs()}") from exc
        topology.login()
        yield topology
    finally:
        topology.stop()
        broker.flushdb()
        broker.close()
