"""The SQL models, shipped inside the package as ``retention._sql``.

This folder stays at the top of the repository (``sql/``) and ``pyproject.toml`` maps it into
the wheel as the package ``retention._sql`` (``[tool.setuptools.package-dir]``). This file makes
the folder a regular package: setuptools' editable install resolves a mapped package only when
it has an ``__init__.py`` (a mapped namespace package below ``retention`` is not found), so with
it ``importlib.resources.files("retention._sql")`` gives this folder in an editable install and
``site-packages/retention/_sql`` in a normal one. Nothing here is Python but this file.
"""
