"""docker-compose.yml runs the topology of tests/test_celery_topology.py with the project's image.

No container engine runs here, so the file is checked by `docker compose config` when that
CLI is present and by parsing otherwise, and every command a service runs (its command and
its healthcheck) is checked against the same versions installed here: each Airflow CLI verb,
each `retention` command and the Celery app the worker healthcheck pings.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.airflow_env import BIN, ROOT, airflow_env

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
LONG_RUNNING = AIRFLOW_SERVICES - {"airflow-init"} | {"postgres", "redis", "mailpit"}
SECRET = re.compile(r"KEY|SECRET|PASSWORD|TOKEN", re.IGNORECASE)
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]*\}")


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    """With the compose CLI: its own validation, given a filled-in .env. Without: YAML and anchors."""
    env_file = tmp_path / ".env"
    values = {name: f"test-{name.lower()}-value-long-enough-0123456789" for name in _env_example()}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    docker = shutil.which("docker")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True) if docker else None
    if probe is not None and probe.returncode == 0:
        proc = subprocess.run(
            [
                docker,
                "compose",
                "--env-file",
                str(env_file),
                "-f",
                str(ROOT / "docker-compose.yml"),
                "config",
                "-q",
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
    else:  # the CLI here has no compose plugin: the parse below is the check
        assert set(_compose()["services"]) == AIRFLOW_SERVICES | {"postgres", "redis", "mailpit"}


def test_airflow_services_share_one_configuration_with_celery_and_postgres() -> None:
    services = _compose()["services"]
    environments = [services[name]["environment"] for name in AIRFLOW_SERVICES]
    assert all(env == environments[0] for env in environments)
    env = environments[0]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["RETENTION_WAREHOUSE_URL"].startswith("postgresql+psycopg2://")
    # The result backend names a driver the image has (psycopg2 comes with the package).
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
    import psycopg2  # noqa: F401 - the driver is a dependency of the package


def test_services_start_in_order_and_say_when_they_are_healthy() -> None:
    services = _compose()["services"]
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        depends = services[name]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
    for name in LONG_RUNNING:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert services[name].get("restart") == "unless-stopped", name
    assert services["airflow-init"]["restart"] == "no"


def test_images_are_pinned() -> None:
    services = _compose()["services"]
    images = {name: s["image"] for name, s in services.items() if "image" in s}
    for name, image in images.items():
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM apache/airflow:(\S+)", dockerfile, re.MULTILINE).group(1)
    pinned = re.search(r"apache-airflow\[[^\]]*\]==([\d.]+)", (ROOT / "pyproject.toml").read_text()).group(1)
    assert base.startswith(f"{pinned}-"), (base, pinned)


def _env_example() -> list[str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return [line.split("=", 1)[0] for line in lines if re.match(r"^[A-Z_]+=", line)]


def test_no_secret_or_weak_default_in_the_file() -> None:
    """Every secret is ${VAR:?...} (compose refuses to start without it) and listed in .env.example."""
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(REQUIRED.findall(text))
    env = _compose()["x-airflow"]["environment"]
    for key, value in env.items():
        if SECRET.search(key) and "CONN" not in key and not key.endswith("_FILE"):
            assert REQUIRED.search(str(value)), f"{key} has a default or a literal value: {value}"
    postgres = _compose()["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert REQUIRED.fullmatch(postgres)
    assert required <= set(_env_example()), required - set(_env_example())
    assert not re.search(r":-[^}]*(secret|change-me|password)", text, re.IGNORECASE)
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_logs_live_on_a_volume_and_the_image_installs_the_package_for_real() -> None:
    compose = _compose()
    mounts = compose["x-airflow"]["volumes"]
    assert any(m.split(":")[1] == "/opt/airflow/logs" for m in mounts)
    assert compose["x-airflow"]["environment"]["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] == "/opt/airflow/logs"
    assert set(compose["volumes"]) >= {m.split(":")[0] for m in mounts}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install" in dockerfile and " -e " not in dockerfile
    for folder in ("retention", "sql", "templates", "dags", "plugins"):
        assert f"COPY --chown=airflow:root {folder} " in dockerfile, folder
        assert (ROOT / folder).is_dir()
    for volume in compose["services"]["postgres"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), source


def test_the_init_service_writes_the_demo_shop_the_night_reads() -> None:
    compose = _compose()
    command = " ".join(compose["services"]["airflow-init"]["command"])
    shop = compose["x-airflow"]["environment"]["RETENTION_SOURCE_URL"]
    assert "retention demo-data" in command and "/opt/retention/var/shop.db" in command
    assert shop.endswith("sqlite:////opt/retention/var/shop.db}")


def test_smtp_connection_points_at_the_mail_catcher() -> None:
    services = _compose()["services"]
    conn = yaml.safe_load(services["airflow-worker"]["environment"]["AIRFLOW_CONN_SMTP_DEFAULT"])
    assert conn["host"] == "mailpit"
    assert str(conn["port"]) in {p.split(":")[1].split()[0].strip('"') for p in services["mailpit"]["ports"]}


def _commands() -> list[list[str]]:
    """Every command line the Airflow services run: their commands and healthchecks."""
    services = _compose()["services"]
    found = []
    for name in sorted(AIRFLOW_SERVICES):
        service = services[name]
        command = service["command"]
        if isinstance(command, str):
            found.append(["airflow", *shlex.split(command)])  # the image's entrypoint is airflow
        else:
            script = command[-1].replace("$$", "$")
            found.extend(shlex.split(part.strip(" ()|")) for part in re.split(r"&&|\|\|", script))
        test = service.get("healthcheck", {}).get("test", [])
        if test and test[0] == "CMD-SHELL":
            found.append(shlex.split(test[1].replace("$$", "$")))
        elif test:
            found.append(test[1:])
    return found


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c[:3]))
def test_every_command_a_service_runs_exists(command: list[str], tmp_path: Path) -> None:
    """The same Airflow, providers and package as the image: each verb answers --help."""
    program, args = command[0], command[1:]
    if program == "test":  # bash builtin in the init script
        return
    if program == "curl":  # the official Airflow image ships curl; the URL must be a real endpoint
        url = args[-1]
        assert url.endswith(("/api/v2/monitor/health", ":8974/health")), url
        return
    verbs = [a for a in args if not a.startswith("-") and "$" not in a and "@" not in a and "/" not in a]
    if program == "airflow":
        argv = [str(BIN / "airflow"), *verbs[:2], "--help"]
    elif program == "retention":
        argv = [str(BIN / "retention"), verbs[0], "--help"]
    elif program == "celery":
        app = args[args.index("--app") + 1]
        argv = [
            sys.executable,
            "-c",
            f"import importlib; m, _, a = {app!r}.rpartition('.'); getattr(importlib.import_module(m), a)",
        ]
    else:
        raise AssertionError(f"unexpected program {program!r} in {command}")
    env = airflow_env(tmp_path, warehouse_url="sqlite://", source_url="sqlite://")
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:6379/15",
        }
    )
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(command)}: {proc.stderr[-2000:]}"
