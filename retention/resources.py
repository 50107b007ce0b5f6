"""The files that ship inside the package: the SQL models and the default templates.

They live at the top of the repository (``sql/``, ``templates/``) and are mapped into the
wheel as the packages ``retention._sql`` and ``retention._templates`` (``pyproject.toml``,
``[tool.setuptools.package-dir]``), so one lookup through :mod:`importlib.resources` finds
them in an editable install (the repository's folders) and in a normal one (inside
``site-packages``) alike; nothing here knows where the repository is.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["packaged_folder", "sql_folder", "templates_folder"]


def packaged_folder(package: str) -> Path:
    """The folder of a data package (``retention._sql``, ``retention._templates``) on disk.

    The renderer's worker processes and Jinja's ``FileSystemLoader`` need a real folder, which
    ``files()`` is for every install pip makes; a zipped install (zipimport) is refused with a
    reason rather than half working.
    """
    folder = files(package)
    if not isinstance(folder, Path) or not folder.is_dir():
        raise RuntimeError(
            f"{package} is not a folder on disk ({folder!r}): install the retention package unzipped "
            "(pip does), or point RETENTION_TEMPLATES_DIR at a templates folder"
        )
    return folder


def sql_folder() -> Path:
    """The SQL models (``sql/`` in the repository)."""
    return packaged_folder("retention._sql")


def templates_folder() -> Path:
    """The default message templates (``templates/`` in the repository)."""
    return packaged_folder("retention._templates")
