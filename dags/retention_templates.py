"""
### retention_templates

Checks every message template in every language against the sample customers, the way
`retention templates lint` does, at 01:00 in the shop's time zone (an hour before the
nightly run; `RETENTION_TEMPLATES_SCHEDULE`, a cron string or `none`) and whenever
marketing triggers it after editing a template.

```
lint ──► verdict
```

* **lint** renders each template under the night's bounds (size, time, memory) and returns
  the summary as its XCom (also in the log): templates checked, the `occasion/language`
  pairs blocked and why (`file:line: message`), and the warnings.
* **verdict** fails, and mails `RETENTION_ALERT_EMAIL`, when a template is blocked: the
  nightly render applies the same verdict (`retention.lint.verdict`) and writes that
  occasion's candidates as `blocked` with the reason, while every other message goes out.
"""

from __future__ import annotations

import datetime as dt
import os

import pendulum
from airflow.sdk import dag, task

from retention_airflow import schedule, task_defaults

TIME_ZONE = os.environ.get("RETENTION_TIME_ZONE", "Europe/Berlin")


@dag(
    dag_id="retention_templates",
    schedule=schedule("RETENTION_TEMPLATES_SCHEDULE", "0 1 * * *", TIME_ZONE),
    start_date=pendulum.datetime(2026, 11, 1, tz=TIME_ZONE),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["retention"],
    default_args=task_defaults(
        retries=1, retry_delay=dt.timedelta(minutes=1), execution_timeout=dt.timedelta(minutes=15)
    ),
)
def retention_templates():
    @task
    def lint() -> dict:
        import logging
        from pathlib import Path

        from retention.lint import lint as lint_templates
        from retention.lint import template_files, verdict
        from retention.pipeline import warehouse_engine
        from retention.registry import occasions
        from retention.render import RenderLimits
        from retention.settings import Settings
        from retention.template_store import effective_templates

        shipped = Settings()
        # What the night renders: the shipped files with the versions saved on the Retention page.
        with effective_templates(warehouse_engine(shipped.warehouse), shipped) as (settings, saved):
            root = Path(settings.templates_path).resolve()
            problems = lint_templates(
                root,
                settings.default_language,
                settings.shop_name,
                settings.shop_url,
                RenderLimits.from_settings(settings),
                occasions=occasions(settings),
            )
            pairs = template_files(root, occasions(settings))
            summary = {
                "templates_dir": str(shipped.templates_path),
                "saved_versions": {f"{o}/{lang}": v for (o, lang), v in sorted(saved.items())},
                "templates": len(pairs),
                "blocked": verdict(problems, pairs, root),
                "warnings": [str(problem) for problem in problems if not problem.is_error],
            }
        log = logging.getLogger("retention.templates")
        log.info("%d templates checked in %s, %d blocked", len(pairs), root, len(summary["blocked"]))
        for pair, reason in sorted(summary["blocked"].items()):
            log.error("BLOCKED %s: %s", pair, reason)
        for warning in summary["warnings"]:
            log.warning("%s", warning)
        return summary

    @task
    def verdict(summary: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        if summary["blocked"]:
            listed = "; ".join(f"{pair}: {reason}" for pair, reason in sorted(summary["blocked"].items()))
            raise AirflowFailException(
                f"{len(summary['blocked'])} of {summary['templates']} templates are blocked "
                f"(the night will not send these): {listed}"
            )
        return {"templates": summary["templates"], "blocked": 0, "warnings": len(summary["warnings"])}

    verdict(lint())


retention_templates()
