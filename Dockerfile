# The Airflow image with the retention package installed (not editable: the SQL models and the
# default templates ship inside the package); used by docker-compose.yml.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root pyproject.toml README.md /opt/retention/
COPY --chown=airflow:root retention /opt/retention/retention
COPY --chown=airflow:root sql /opt/retention/sql
COPY --chown=airflow:root templates /opt/retention/templates
COPY --chown=airflow:root dags /opt/retention/dags
COPY --chown=airflow:root plugins /opt/retention/plugins
# airflow: the Celery and PostgreSQL extras at the image's own Airflow version; demo: the
# generator the init service uses for the demo shop; charts: the segments chart.
RUN pip install --no-cache-dir "/opt/retention[airflow,demo,charts]"
