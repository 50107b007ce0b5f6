# The Airflow image with the retention package installed; used by docker-compose.yml.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root pyproject.toml README.md /opt/retention/
COPY --chown=airflow:root retention /opt/retention/retention
COPY --chown=airflow:root sql /opt/retention/sql
COPY --chown=airflow:root templates /opt/retention/templates
RUN pip install --no-cache-dir -e /opt/retention "apache-airflow==3.3.2" "apache-airflow-providers-celery" "apache-airflow-providers-postgres"
