"""Running real Airflow from tests: an isolated AIRFLOW_HOME and the repo's dags/ and plugins/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def airflow_env(home: Path, *, warehouse_url: str, source_url: str, smtp_port: int = 8025) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RETENTION_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(
                {
                    "conn_type": "smtp",
                    "host": "127.0.0.1",
                    "port": smtp_port,
                    "extra": {"disable_ssl": True, "disable_tls": True},
                }
            ),
            "RETENTION_HOME": str(home),
            "RETENTION_WAREHOUSE_URL": warehouse_url,
            "RETENTION_SOURCE_URL": source_url,
            "RETENTION_UNSUBSCRIBE_SECRET": "e2e-unsubscribe-secret-0123456789abcdef",
            "PYTHONWARNINGS": "ignore",
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


def run(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run a command; on failure, the assertion shows its output."""
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return proc


def probe(code: str, env: dict[str, str], *args: str, timeout: int = 300) -> str:
    """Run Python ``code`` (with ``args`` in sys.argv) in Airflow's environment; its last line.

    For calling a DAG's task callables as Airflow parses them, without a scheduler.
    """
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]
