"""Customer retention: the domain logic behind the Airflow DAGs.

Nothing in this package imports Airflow; the DAGs in ``dags/`` only wire these
functions to tasks, and the ``retention`` command line drives the same functions.
"""

__version__ = "0.1.0"
