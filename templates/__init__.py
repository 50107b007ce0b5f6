"""The default message templates, shipped inside the package as ``retention._templates``.

This folder stays at the top of the repository (``templates/``) and ``pyproject.toml`` maps it
into the wheel as the package ``retention._templates``; this file only makes the folder a
regular package, so that ``importlib.resources`` finds it in editable and normal installs alike
(see ``sql/__init__.py``). Deployments point ``RETENTION_TEMPLATES_DIR`` at their own folder;
a copy of this one does not need this file.
"""
