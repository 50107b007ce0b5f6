"""docker-compose.yml describes the production topology; no Docker engine runs here, so it is checked by parsing."""

from __future__ import annotations

import yaml

from tests.airflow_env import ROOT

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_topology_has_every_service() -> None:
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


def test_services_start_after_init_and_healthy_databases() -> None:
    services = _compose()["services"]
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        depends = services[name]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_smtp_connection_points_at_the_mail_catcher() -> None:
    services = _compose()["services"]
    conn = yaml.safe_load(services["airflow-worker"]["environment"]["AIRFLOW_CONN_SMTP_DEFAULT"])
    assert conn["host"] == "mailpit"
    assert str(conn["port"]) in {p.split(":")[1].strip('"') for p in services["mailpit"]["ports"]}


def test_mounted_folders_exist_in_the_repo() -> None:
    services = _compose()["services"]
    for volume in services["airflow-worker"]["volumes"] + services["postgres"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), source
