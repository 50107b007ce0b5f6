"""Templates saved from the Retention page: kept in the warehouse, read by every render.

**Where an edit lives.** A template saved in the page's editor is a new row of
``template_versions`` in the warehouse, never a file on the api-server. Every process that
renders (the nightly render task on whichever Celery worker runs it, ``retention rerender``,
the page's preview) reads the warehouse already, so an edit saved on the api-server reaches
all of them with no shared volume and no redeploy. The files in ``templates/`` are the shipped
defaults: an (occasion, language) with no saved version renders its file, one with saved
versions renders the newest. Rows are only ever added, so the history shows every wording that
was live, who saved it and when, and restoring a version is saving its source again.

**Frozen templates.** A deployment that bakes its templates into an image and wants exactly
those sets ``RETENTION_TEMPLATES_FROZEN=true``: saving is refused (the page offers the edited
file for download instead) and renders ignore saved versions.

The renderer works on a folder (its sandboxed loader, the linter and the preview all do), so
:func:`effective_templates` hands out one: the shipped folder itself when nothing is saved,
else a temporary copy of it with the saved sources written over their files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, func, inspect, select

from retention import schema
from retention.night import as_naive_utc
from retention.registry import occasions, template_folder
from retention.settings import LANGUAGES, Settings

__all__ = [
    "TemplatesFrozen",
    "LintFailed",
    "Version",
    "current_versions",
    "effective_templates",
    "history",
    "save",
    "restore",
    "shipped_source",
    "version",
    "current",
]


class TemplatesFrozen(RuntimeError):
    """Saving is off: this deployment's templates are baked in (``RETENTION_TEMPLATES_FROZEN``)."""


class LintFailed(ValueError):
    """A draft with lint errors: nothing was saved."""

    def __init__(self, name: str, problems: list[dict]) -> None:
        self.problems = problems
        first = next(p for p in problems if p["severity"] == "error")
        where = f"{first['file']}:{first['line']}" if first.get("line") else first["file"]
        super().__init__(f"{name} not saved: {len(problems)} problem(s), first {where}: {first['message']}")


@dataclasses.dataclass(frozen=True)
class Version:
    """One saved template version (``version_id`` 0: the shipped file, never saved)."""

    version_id: int
    occasion: str
    language: str
    source: str
    sha256: str
    saved_by: str
    saved_at: dt.datetime | None
    note: str | None = None

    @property
    def label(self) -> str:
        return f"version {self.version_id}" if self.version_id else "the shipped file"


def _sha(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def _check_pair(occasion: str, language: str, settings: Settings | None) -> None:
    known = occasions(settings)
    if occasion not in known or language not in LANGUAGES:
        raise KeyError(
            f"no template {occasion}/{language}: occasions are {', '.join(known)}, "
            f"languages {', '.join(LANGUAGES)}"
        )


def shipped_source(settings: Settings, occasion: str, language: str) -> str:
    """The source of the shipped file (``KeyError`` if there is none)."""
    _check_pair(occasion, language, settings)
    path = template_folder(occasion, settings) / f"{language}.jinja"
    if not path.is_file():
        raise KeyError(f"no template {occasion}/{language} in {path.parent}")
    return path.read_text(encoding="utf-8")


def _version(row) -> Version:
    return Version(
        version_id=row.version_id,
        occasion=row.occasion,
        language=row.language,
        source=row.source,
        sha256=row.sha256,
        saved_by=row.saved_by,
        saved_at=row.saved_at,
        note=row.note,
    )


def current_versions(conn: Connection) -> dict[tuple[str, str], Version]:
    """The newest saved version of every (occasion, language) that has one."""
    tv = schema.template_versions
    newest = (
        select(tv.c.occasion, tv.c.language, func.max(tv.c.version_id).label("version_id"))
        .group_by(tv.c.occasion, tv.c.language)
        .subquery()
    )
    rows = conn.execute(select(tv).join(newest, tv.c.version_id == newest.c.version_id))
    return {(row.occasion, row.language): _version(row) for row in rows}


def history(engine: Engine, occasion: str, language: str, settings: Settings | None = None) -> list[Version]:
    """Every saved version of one template, newest first (the shipped file is not listed)."""
    _check_pair(occasion, language, settings)
    tv = schema.template_versions
    with engine.connect() as conn:
        rows = conn.execute(
            select(tv)
            .where(tv.c.occasion == occasion, tv.c.language == language)
            .order_by(tv.c.version_id.desc())
        )
        return [_version(row) for row in rows]


def version(engine: Engine, version_id: int) -> Version:
    """One saved version (``KeyError`` if there is none with that id)."""
    tv = schema.template_versions
    with engine.connect() as conn:
        row = conn.execute(select(tv).where(tv.c.version_id == version_id)).first()
    if row is None:
        raise KeyError(f"no saved template version {version_id}")
    return _version(row)


def current(engine: Engine, settings: Settings, occasion: str, language: str) -> Version:
    """What renders now for (occasion, language): the newest saved version, else the shipped file."""
    _check_pair(occasion, language, settings)
    if not settings.templates_frozen:
        with engine.connect() as conn:
            saved = current_versions(conn).get((occasion, language))
        if saved is not None:
            return saved
    source = shipped_source(settings, occasion, language)
    return Version(0, occasion, language, source, _sha(source), "shipped", None)


def save(
    engine: Engine,
    settings: Settings,
    occasion: str,
    language: str,
    source: str,
    saved_by: str,
    *,
    now: dt.datetime,
    note: str | None = None,
) -> tuple[Version, bool]:
    """Save ``source`` as the live template of (occasion, language) if it passes lint.

    Returns the live version and whether a new one was written: saving the wording that is
    already live writes nothing. Raises :class:`TemplatesFrozen` when saving is off and
    :class:`LintFailed` (with every problem at its line) when the draft has lint errors.
    ``now`` is the moment of the save (UTC), passed in by the caller.
    """
    from retention.web.editor import preview_draft  # the same lint and render as the page's preview

    if settings.templates_frozen:
        raise TemplatesFrozen(
            "templates are frozen in this deployment (RETENTION_TEMPLATES_FROZEN): download the edited "
            "file and ship it with the next image"
        )
    live = current(engine, settings, occasion, language)
    if live.source == source:
        return live, False
    checked = preview_draft(settings, occasion, language, source, engine=engine)
    if not checked.ok:
        raise LintFailed(f"{occasion}/{language}", checked.problems)
    tv = schema.template_versions
    with engine.begin() as conn:
        version_id = conn.execute(
            tv.insert()
            .values(
                occasion=occasion,
                language=language,
                source=source,
                sha256=_sha(source),
                saved_by=saved_by[:250],
                saved_at=as_naive_utc(now),
                note=note,
            )
            .returning(tv.c.version_id)
        ).scalar_one()
    return version(engine, version_id), True


def restore(
    engine: Engine,
    settings: Settings,
    version_id: int,
    saved_by: str,
    *,
    occasion: str,
    language: str,
    now: dt.datetime,
) -> tuple[Version, bool]:
    """Make an earlier version live again by saving its source anew (``version_id`` 0: the shipped file)."""
    if version_id == 0:
        source, note = shipped_source(settings, occasion, language), "restored the shipped file"
    else:
        old = version(engine, version_id)
        if (old.occasion, old.language) != (occasion, language):
            raise KeyError(
                f"version {version_id} is {old.occasion}/{old.language}, not {occasion}/{language}"
            )
        source, note = old.source, f"restored version {version_id}"
    return save(engine, settings, occasion, language, source, saved_by, now=now, note=note)


@contextlib.contextmanager
def effective_templates(
    engine: Engine | None, settings: Settings
) -> Iterator[tuple[Settings, dict[tuple[str, str], int]]]:
    """``settings`` whose ``templates_dir`` is the folder a render must use right now, and the
    saved version id of each (occasion, language) in it (absent: the shipped file).

    The shipped folder when templates are frozen, there is no warehouse, or nothing was saved,
    and no occasion was added (``RETENTION_OCCASION_DIRS``); else a temporary copy of it with
    the added occasions' templates in their own sub-folders and every saved version's source
    over its file, removed on exit. Both come from one read, at entry: a save during a long
    render applies to the next one.
    """
    saved: dict[tuple[str, str], Version] = {}
    if engine is not None and not settings.templates_frozen:
        with engine.connect() as conn:
            # A warehouse without the schema yet (before its first night) has nothing saved.
            if inspect(conn).has_table(schema.template_versions.name):
                saved = current_versions(conn)
    added = [declared for declared in occasions(settings).values() if declared.folder is not None]
    if not saved and not added:
        yield settings, {}
        return
    with tempfile.TemporaryDirectory(prefix="retention-templates-") as tmp:
        root = Path(tmp) / "templates"
        shutil.copytree(settings.templates_path, root)
        for declared in added:
            (root / declared.name).mkdir(exist_ok=True)
            for path in declared.folder.glob("*.jinja"):
                shutil.copyfile(path, root / declared.name / path.name)
        for (occasion, language), saved_version in saved.items():
            (root / occasion).mkdir(exist_ok=True)
            (root / occasion / f"{language}.jinja").write_text(saved_version.source, encoding="utf-8")
        yield (
            settings.model_copy(update={"templates_dir": root}),
            {pair: v.version_id for pair, v in saved.items()},
        )


def allowed_editor(name: str, roles: list[str], editors: str) -> bool:
    """Whether ``RETENTION_TEMPLATE_EDITORS`` lets this user save (empty: no extra restriction).

    Entries are user names or ``role:<name>``, compared case-insensitively.
    """
    entries = {entry.strip().lower() for entry in editors.split(",") if entry.strip()}
    if not entries:
        return True
    return name.lower() in entries or any(f"role:{role}".lower() in entries for role in roles if role)
