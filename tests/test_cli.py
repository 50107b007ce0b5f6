"""Every command's failure is ONE line on stderr and a non-zero exit (real subprocesses)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SECRET

STRONG = SECRET.decode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cli(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RETENTION_", "AIRFLOW"))}
    base.update({"RETENTION_HOME": str(home), "RETENTION_UNSUBSCRIBE_SECRET": STRONG, **env})
    return subprocess.run(
        [sys.executable, "-m", "retention.cli", *args], env=base, capture_output=True, text=True, timeout=120
    )


def _assert_one_line_failure(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _a_file(home: Path) -> Path:
    path = home / "a-file"
    path.write_text("not a folder")
    return path


def _unreachable_pg() -> str:
    return f"postgresql+psycopg2://retention:hidden-pw@127.0.0.1:{_free_port()}/nowhere"


def _corrupt(home: Path) -> str:
    path = home / "corrupt.db"
    path.write_bytes(b"this is not a database file, only some text" * 100)
    return f"sqlite:///{path}"


#: One failure per command: a database that cannot be reached, opened or read, or a bad argument.
FAILURES = {
    "migrate-unreachable-pg": (["migrate", "--url", "PG"], ["retention migrate: error", "127.0.0.1"]),
    "migrate-folder-is-a-file": (["migrate", "--url", "UNDER_FILE"], ["retention migrate: error"]),
    "migrate-corrupt": (["migrate", "--url", "CORRUPT"], ["retention migrate: error", "not a database"]),
    "report-corrupt": (["report", "--url", "CORRUPT"], ["retention report: error", "not a database"]),
    "report-no-schema": (["report", "--url", "EMPTY"], ["retention report: error", "retention migrate"]),
    "report-bad-date": (["report", "--date", "2026-13-01"], ["retention report: error", "month"]),
    "quarantine-unreachable-pg": (["quarantine", "--url", "PG"], ["retention quarantine: error"]),
    "nightly-corrupt": (
        ["nightly", "--date", "2026-11-22", "--url", "CORRUPT"],
        ["retention nightly: error"],
    ),
    "send-bad-until": (["send", "--until", "tomorrow"], ["retention send: error"]),
    "demo-data-folder-is-a-file": (
        ["demo-data", "--customers", "10", "--source-url", "UNDER_FILE"],
        ["retention demo-data: error"],
    ),
    "preview-corrupt": (
        ["templates", "preview", "thank_you", "--customer", "1", "--url", "CORRUPT"],
        ["retention templates"],
    ),
    "lint-no-folder": (["templates", "lint", "--dir", "MISSING_DIR"], ["no-templates-here"]),
    "forget-corrupt": (["forget", "7", "--url", "CORRUPT"], ["retention forget: error", "not a database"]),
    "forget-unknown": (["forget", "7", "--url", "EMPTY"], ["retention forget: no customer with id 7"]),
    "forget-not-a-person": (["forget", "Jane Doe", "--url", "EMPTY"], ["retention forget:", "neither"]),
}


@pytest.mark.parametrize(("args", "words"), list(FAILURES.values()), ids=list(FAILURES))
def test_a_failing_command_says_why_in_one_line(tmp_path: Path, args: list[str], words: list[str]) -> None:
    urls = {
        "PG": _unreachable_pg(),
        "UNDER_FILE": f"sqlite:///{_a_file(tmp_path) / 'w.db'}",  # its "folder" is a file
        "CORRUPT": _corrupt(tmp_path),
        "MISSING_DIR": str(tmp_path / "no-templates-here"),
        "EMPTY": f"sqlite:///{tmp_path / 'never-migrated.db'}",
    }
    line = _assert_one_line_failure(_cli([urls.get(a, a) for a in args], tmp_path), *words)
    assert "hidden-pw" not in line  # the password of a URL never reaches the message


def test_a_report_for_a_night_that_never_ran_names_the_night(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    assert _cli(["migrate", "--url", url], tmp_path).returncode == 0
    _assert_one_line_failure(
        _cli(["report", "--url", url, "--date", "2020-01-01"], tmp_path), "2020-01-01", "never ran"
    )


@pytest.mark.parametrize(
    ("command", "secret"),
    [(["nightly", "--date", "2026-11-22"], "short-secret"), (["send", "--dry-run"], "")],
    ids=["nightly-short", "send-unset"],
)
def test_a_weak_unsubscribe_secret_stops_a_command_before_any_stage(tmp_path: Path, command, secret) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    proc = _cli([*command, "--url", url], tmp_path, RETENTION_UNSUBSCRIBE_SECRET=secret)
    _assert_one_line_failure(proc, "RETENTION_UNSUBSCRIBE_SECRET")
    assert not (tmp_path / "w.db").exists()  # refused before the warehouse was touched
