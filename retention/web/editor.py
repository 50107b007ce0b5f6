"""Live preview of a template draft for the Retention page's editor: lint and render, nothing saved.

The draft replaces one ``<occasion>/<language>.jinja`` in a temporary copy of the templates
folder; the same :func:`retention.lint.lint` and :func:`retention.lint.preview` as
``retention templates lint`` and ``preview`` then run on that copy, in the render worker and
under the night's bounds. So the editor shows exactly what a night would do with the draft: every
lint problem at its line, and the message (subject, HTML, text) for a sample customer or a real
customer's name, language and country. The unsubscribe link is the samples' placeholder: a
preview never carries a signed link, nor any other secret.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select

from retention import schema
from retention.lint import lint, preview, template_files
from retention.registry import occasions, template_folder
from retention.render import RenderLimits, TemplateProblem
from retention.samples import customer_context, sample_context
from retention.settings import LANGUAGES, Settings
from retention.template_store import effective_templates

__all__ = ["DraftPreview", "preview_draft", "template_source", "available_templates"]


@dataclass
class DraftPreview:
    """What the editor shows for a draft."""

    problems: list[dict] = field(default_factory=list)  # {"line", "message", "severity", "file"}
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    language: str | None = None

    @property
    def ok(self) -> bool:
        return not any(p["severity"] == "error" for p in self.problems)


def available_templates(settings: Settings) -> list[tuple[str, str]]:
    """(occasion, language) of every shipped template, an added occasion's from its own folder."""
    known = occasions(settings)
    found = template_files(settings.templates_path, {k: v for k, v in known.items() if v.folder is None})
    for name, declared in known.items():
        if declared.folder is not None:
            found += [(o, lang) for o, lang in template_files(declared.folder.parent, {name: declared})]
    return found


def template_source(settings: Settings, occasion: str, language: str) -> str:
    """The current source of one template (``KeyError`` for one that does not exist)."""
    if occasion not in occasions(settings) or language not in LANGUAGES:
        raise KeyError(f"{occasion}/{language}")
    path = template_folder(occasion, settings) / f"{language}.jinja"
    if not path.is_file():
        raise KeyError(f"{occasion}/{language}")
    return path.read_text(encoding="utf-8")


def _context(
    settings: Settings, engine: Engine | None, occasion: str, language: str, customer_id: int | None
):
    if customer_id is None or engine is None:
        return sample_context(
            occasion, language, settings.shop_name, settings.shop_url, occasions=occasions(settings)
        )
    c = schema.stg_customers
    with engine.connect() as conn:
        row = conn.execute(
            select(c.c.first_name, c.c.last_name, c.c.country).where(c.c.customer_id == customer_id)
        ).first()
    if row is None:
        raise KeyError(f"no customer {customer_id}")
    customer = customer_context(row.first_name, row.last_name, language, row.country)
    return sample_context(
        occasion, language, settings.shop_name, settings.shop_url, customer, occasions(settings)
    )


def preview_draft(
    settings: Settings,
    occasion: str,
    language: str,
    source: str,
    customer_id: int | None = None,
    engine: Engine | None = None,
    variant: str = "a",
) -> DraftPreview:
    """Lint ``source`` as ``occasion/language`` (its variant ``b``: ``language.b``) and render it;
    problems are reported, never raised."""
    template_source(settings, occasion, language)  # a known template only
    name = f"{occasion}/{language}.jinja" if variant == "a" else f"{occasion}/{language}.{variant}.jinja"
    limits = RenderLimits.from_settings(settings)
    result = DraftPreview(language=language)
    with tempfile.TemporaryDirectory(prefix="retention-draft-") as tmp:
        root = Path(tmp) / "templates"
        with effective_templates(None, settings) as (shipped, _):  # with added occasions' folders
            shutil.copytree(shipped.templates_path, root)
        (root / name).write_text(source, encoding="utf-8")
        known = occasions(settings)
        for problem in lint(
            root, settings.default_language, settings.shop_name, settings.shop_url, limits, occasions=known
        ):
            relative = (
                Path(problem.file).relative_to(root).as_posix()
                if problem.file.startswith(str(root))
                else problem.file
            )
            if relative == name or problem.occasion is None:
                result.problems.append(
                    {
                        "file": relative,
                        "line": problem.line,
                        "message": problem.message,
                        "severity": problem.severity,
                    }
                )
        if not result.ok:
            return result
        try:
            context = _context(settings, engine, occasion, language, customer_id)
            subject, html_path, text_path = preview(
                root,
                occasion,
                language,
                Path(tmp) / "out",
                context,
                settings.default_language,
                limits,
                variant,
            )
        except TemplateProblem as problem:
            result.problems.append(
                {"file": name, "line": problem.line, "message": str(problem), "severity": "error"}
            )
            return result
        result.subject = subject
        result.html = html_path.read_text(encoding="utf-8")
        result.text = text_path.read_text(encoding="utf-8").split("\n\n", 1)[-1]
    return result
