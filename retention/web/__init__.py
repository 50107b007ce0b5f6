"""Web front ends of the pipeline, as plain FastAPI apps (no Airflow import here).

* :mod:`retention.web.unsubscribe_app`: the public one-click unsubscribe endpoint (RFC 8058),
  the only thing meant to be reachable without a login.
* :mod:`retention.web.retention_app`: the Retention page (what a night produced), meant to be
  mounted by Airflow's api-server behind its login (``plugins/retention_ui.py`` does that).
* :mod:`retention.web.queries`: the warehouse queries behind the page.
"""
