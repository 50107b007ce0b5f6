"""The Retention plugin for Airflow 3's api-server: the Retention page and the unsubscribe endpoint.

Two FastAPI apps (``fastapi_apps``, mounted by the api-server) and a nav entry
(``external_views``) that shows the page inside the Airflow UI:

* ``/retention/``: the Retention page (``retention.web.retention_app``). Airflow does not
  authenticate plugin apps on its own (a mounted app inherits none of the core API's
  dependencies), so every route of this app depends on the api-server's own authentication:
  ``get_user`` (the JWT of the Airflow login, from the ``_token`` cookie or an
  ``Authorization: Bearer`` header) and the auth manager's ``is_authorized_custom_view``
  for the resource ``Retention`` (method ``GET``), which a deployment grants per role.
  Saving a template also needs ``PUT`` on ``Retention Templates`` and, when it is set, a
  name or ``role:<role>`` listed in ``RETENTION_TEMPLATE_EDITORS`` (Airflow's simple auth
  manager grants every custom view to every user, so with it that setting is what restricts).
* ``/retention-public/unsubscribe``: the RFC 8058 one-click unsubscribe endpoint
  (``retention.web.unsubscribe_app``), the only route meant to be reachable without a login.
  A reverse proxy maps the public ``RETENTION_UNSUBSCRIBE_BASE_URL/unsubscribe`` to it
  (README, "The Retention page and unsubscribe").

The apps are built on their first request, not when Airflow imports this module: every Airflow
process loads plugins, and the page's imports (SciPy, the segments module) would slow them all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from airflow.plugins_manager import AirflowPlugin

__all__ = ["RetentionPlugin", "RESOURCE", "TEMPLATES_RESOURCE", "PAGE_PREFIX", "PUBLIC_PREFIX"]

#: The auth manager's custom-view resource a deployment grants to see the page.
RESOURCE = "Retention"
#: The custom view whose ``PUT`` permission saving templates needs (a deployment grants it to marketing).
TEMPLATES_RESOURCE = "Retention Templates"
PAGE_PREFIX = "/retention"
PUBLIC_PREFIX = "/retention-public"


class _LazyApp:
    """An ASGI app that builds the real one on its first request (lifespan events included)."""

    def __init__(self, build: Callable[[], Any], name: str) -> None:
        self._build, self._name, self._app, self._lock = build, name, None, threading.Lock()

    def _get(self) -> Any:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    self._app = self._build()
        return self._app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        await self._get()(scope, receive, send)

    def __repr__(self) -> str:  # shown on Admin -> Plugins
        return f"retention.web.{self._name}"


def _build_page() -> Any:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import Depends, HTTPException, Request, Response, status
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import RedirectResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from retention.web.retention_app import create_retention_app

    def require_retention_viewer(user: Any = Depends(get_user)) -> Any:  # noqa: B008 (FastAPI's idiom)
        if not get_auth_manager().is_authorized_custom_view(method="GET", resource_name=RESOURCE, user=user):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this user may not see the {RESOURCE} page")
        return user

    from retention import template_store
    from retention.settings import Settings
    from retention_airflow import unsubscribe_secret

    settings = Settings()

    def editor_name(user: Any) -> str | None:
        """The user's name if they may save templates: the auth manager's PUT permission on the
        custom view ``Retention Templates``, and RETENTION_TEMPLATE_EDITORS when it is set."""
        if not get_auth_manager().is_authorized_custom_view(
            method="PUT", resource_name=TEMPLATES_RESOURCE, user=user
        ):
            return None
        roles = [getattr(user, "role", None) or ""] + [
            getattr(role, "name", str(role)) for role in getattr(user, "roles", None) or []
        ]
        name = user.get_name()
        return name if template_store.allowed_editor(name, roles, settings.template_editors) else None

    app = create_retention_app(
        require_retention_viewer, settings=settings, editor_name=editor_name, secret=unsubscribe_secret
    )

    @app.exception_handler(StarletteHTTPException)
    async def login_first(request: Request, exc: StarletteHTTPException) -> Response:
        """A person who opens the page without a login is sent to Airflow's login, and back."""
        if exc.status_code == status.HTTP_401_UNAUTHORIZED and "text/html" in request.headers.get(
            "accept", ""
        ):
            back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(get_auth_manager().get_url_login(next_url=back), status_code=303)
        return await http_exception_handler(request, exc)

    return app


def _build_unsubscribe() -> Any:
    from retention.web.unsubscribe_app import create_unsubscribe_app
    from retention_airflow import unsubscribe_secret

    # The signing secret as the DAGs get it: RETENTION_UNSUBSCRIBE_SECRET, else the password of
    # the Airflow connection ``retention_unsubscribe``.
    return create_unsubscribe_app(secret=unsubscribe_secret)


class RetentionPlugin(AirflowPlugin):
    """The Retention page in the Airflow UI, and the public unsubscribe endpoint."""

    name = "retention"
    fastapi_apps = [
        {"app": _LazyApp(_build_page, "retention_app"), "url_prefix": PAGE_PREFIX, "name": "Retention page"},
        {
            "app": _LazyApp(_build_unsubscribe, "unsubscribe_app"),
            "url_prefix": PUBLIC_PREFIX,
            "name": "Retention unsubscribe (public)",
        },
    ]
    external_views = [
        {
            "name": "Retention",
            "href": "retention/",  # relative: works under any [api] base_url
            "destination": "nav",
            "url_route": "retention",
        }
    ]
