"""The web application of ``objstore ui``: routes, templates, the edits.

URLs carry names in query strings, never in path segments: a project or alias
may be ``..`` or hold a space, and browsers resolve ``..`` segments (encoded or
not) before sending a request. Versions are addressed by number, which never
moves, so a URL shared today shows the same version tomorrow; aliases are shown
and linked to the number they point at.

A server on a loopback address answers only requests whose ``Host`` names a loopback
address or ``localhost`` (any port): otherwise a web page whose name was re-pointed to
127.0.0.1 (DNS rebinding) would be the same origin as this view, read its pages with
their CSRF token, and post edits. Such a request gets a 403 page saying so.

Edits (``allow_edits`` only) are POSTs carrying the server's CSRF token and the
value the page showed; a wrong token is refused (403), a stale value is shown as
a conflict (409) with the page as it is now. Errors are one line on a page of
their own with the right status; no traceback reaches the browser.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import os
import secrets
import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

try:
    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, RedirectResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
except ImportError as exc:  # the optional extra is not installed
    from objstore.errors import InvalidInput

    raise InvalidInput("objstore ui needs the 'ui' extra: pip install 'objstore[ui]'") from exc

from objstore.console import human_bytes
from objstore.errors import Conflict, InvalidInput, InvalidName, NotFound, ObjstoreError
from objstore.model.names import CollectionPath, check_name
from objstore.model.store import Store
from objstore.ui import views
from objstore.ui.graph import GraphNode, layout

HERE = Path(__file__).resolve().parent


def link(page: str, **params: object) -> str:
    """A page's URL with its parameters in the query string (see the module docstring)."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"/{page}" + (f"?{query}" if query else "")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, no port) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _loopback_host_header(value: str) -> bool:
    """Whether a ``Host`` header (``name[:port]``, ``[v6]:port``) names a loopback address."""
    try:
        name = urlsplit("//" + value).hostname
    except ValueError:
        return False
    return name is not None and is_loopback(name)


def _when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def node_href(node: GraphNode) -> str | None:
    """Where a lineage node links: its version's or run's page; None if not in this store."""
    if "not in this store" in node.detail:
        return None
    if node.kind == "run":
        entity, project, run_id = (node.name.split("/", 2) + ["", ""])[:3]
        return link("run", entity=entity, project=project, id=run_id)
    path, _, selector = node.name.rpartition(":")
    entity, project, name = (path.split("/", 2) + ["", ""])[:3]
    return link("version", entity=entity, project=project, name=name, v=selector.removeprefix("v"))


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals["link"] = link
    env.globals["node_href"] = node_href
    env.filters["size"] = lambda n: "-" if n is None else human_bytes(int(n))
    env.filters["when"] = _when
    return env


def _coll(q: dict[str, str]) -> CollectionPath:
    entity, project, name = q.get("entity", ""), q.get("project", ""), q.get("name", "")
    check_name(entity, "entity")
    check_name(project, "project")
    check_name(name, "artifact")
    return CollectionPath(entity, project, name)


def _digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes '①' and '²', which int() refuses."""
    return text.isascii() and text.isdigit()


def _skip(q: dict[str, str], key: str) -> int:
    """A page's first row (``?skip=N``); anything but digits is the first page."""
    text = q.get(key, "")
    return int(text) if _digits(text) and len(text) <= 12 else 0


def _tags(text: str) -> list[str]:
    """The tags field of a form: comma-separated, blanks around each dropped."""
    return [t.strip() for t in text.split(",") if t.strip()]


def _number(text: str, what: str) -> str:
    if not _digits(text):
        raise InvalidInput(f"{what} must be a version number, not {text!r}")
    return f"v{int(text)}"


# A form here is a few names and a description: anything larger is not ours.
MAX_FORM_BYTES = 256 * 1024


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded POST body (the only kind our pages send), parsed without the
    multipart package Starlette's ``form()`` needs; the last value of a repeated name."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


class UI:
    """The application over one open store; ``allow_edits`` enables the POSTs; ``loopback``
    (a server on a loopback address) refuses requests for any other Host (see the module docstring)."""

    def __init__(self, store: Store, *, allow_edits: bool = False, loopback: bool = True) -> None:
        self.store, self.allow_edits, self.loopback = store, allow_edits, loopback
        self.usage = views.UsageCounter(store.location)
        self.csrf = secrets.token_urlsafe(32)
        self.env = _environment()
        routes = [
            Route("/", self._page(self.store_view)),
            Route("/usage", self._page(self.usage_view)),
            Route("/project", self._page(self.project_view)),
            Route("/collection", self._page(self.collection_view)),
            Route("/version", self._page(self.version_view)),
            Route("/diff", self._page(self.diff_view)),
            Route("/run", self._page(self.run_view)),
            Route("/version/alias", self._edit(self.alias_edit), methods=["POST"]),
            Route("/version/description", self._edit(self.description_edit), methods=["POST"]),
            Route("/collection/annotations", self._edit(self.collection_edit), methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        self.app = Starlette(routes=routes)

    # -- rendering ---------------------------------------------------------------
    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(store=self.store.location, allow_edits=self.allow_edits,
                                                       csrf=self.csrf, **values)
        return HTMLResponse(html, status_code=status)

    def failure(self, exc: Exception) -> HTMLResponse:
        status = 404 if isinstance(exc, NotFound) else 400 if isinstance(exc, (InvalidInput, InvalidName)) else 500
        return self.render("error.html", status=status, message=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def foreign_host(self, request: Request) -> HTMLResponse | None:
        """The 403 page for a request naming another host than this loopback server's; None if it may be answered."""
        if not self.loopback or _loopback_host_header(request.headers.get("host", "")):
            return None
        asked = request.headers.get("host", "")[:100]
        return self.render("error.html", status=403, message=f"this view answers requests for 127.0.0.1 or "
                           f"localhost only, not for {asked!r}")

    def _page(self, view: Callable[[dict[str, str]], HTMLResponse]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if (refused := self.foreign_host(request)) is not None:
                return refused
            try:  # the library is blocking I/O: a worker thread, so pages load side by side
                return await run_in_threadpool(view, dict(request.query_params))
            except ObjstoreError as exc:
                return self.failure(exc)
            except Exception as exc:  # a bug of ours: one line to the log and the page, no traceback
                print(f"objstore ui: {request.url.path}: {type(exc).__name__}: {exc}", file=sys.stderr)
                if os.environ.get("OBJSTORE_DEBUG", "") not in ("", "0"):
                    traceback.print_exc()
                return self.render("error.html", status=500, message=f"internal error ({type(exc).__name__}); "
                                   "run with OBJSTORE_DEBUG=1 for details")
        return endpoint

    def _edit(self, change: Callable[[dict[str, str]], Response]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if (refused := self.foreign_host(request)) is not None:
                return refused
            form = await _form(request)
            if not self.allow_edits:
                return self.render("error.html", status=403, message="this view is read-only: start it with "
                                                                     "'objstore ui --allow-edits' to change anything")
            if not hmac.compare_digest(form.get("csrf", ""), self.csrf):
                return self.render("error.html", status=403, message="the form's token is not this server's: reload "
                                                                     "the page and try again")
            try:
                return await run_in_threadpool(change, form)
            except Conflict as exc:
                q = {k: form.get(k, "") for k in ("entity", "project", "name", "v")}
                if not q["v"]:  # a collection's form: its page as it is now
                    return self.render("collection.html", status=409, conflict=str(exc), **self.collection_context(q))
                return self.render("version.html", status=409, conflict=str(exc), **self.version_context(q))
            except ObjstoreError as exc:
                return self.failure(exc)
        return endpoint

    # -- pages -------------------------------------------------------------------
    def store_view(self, q: dict[str, str]) -> HTMLResponse:
        return self.render("store.html", page=views.store_page(self.store, _skip(q, "skip")), page_size=views.PAGE_SIZE,
                           counted=self.usage.latest())

    def usage_view(self, q: dict[str, str]) -> HTMLResponse:
        return self.render("usage.html", usage=views.usage_page(self.store))

    def project_view(self, q: dict[str, str]) -> HTMLResponse:
        entity, project = q.get("entity", ""), q.get("project", "")
        check_name(entity, "entity")
        check_name(project, "project")
        page = views.project_page(self.store, entity, project, _skip(q, "skip"), _skip(q, "rskip"))
        return self.render("project.html", page=page, page_size=views.PAGE_SIZE)

    def collection_context(self, q: dict[str, str]) -> dict[str, Any]:
        return {"page": views.collection_page(self.store, _coll(q), _skip(q, "skip")), "page_size": views.PAGE_SIZE}

    def collection_view(self, q: dict[str, str]) -> HTMLResponse:
        return self.render("collection.html", **self.collection_context(q))

    def version_context(self, q: dict[str, str]) -> dict[str, Any]:
        page = views.version_page(self.store, _coll(q), _number(q.get("v", ""), "v"))
        return {"page": page, "graph": layout(page.lineage)}

    def version_view(self, q: dict[str, str]) -> HTMLResponse:
        return self.render("version.html", **self.version_context(q))

    def diff_view(self, q: dict[str, str]) -> HTMLResponse:
        coll = _coll(q)
        a, b = _number(q.get("a", ""), "a"), _number(q.get("b", ""), "b")
        return self.render("diff.html", coll=coll, a=a, b=b, diff=views.diff_page(self.store, (coll, a), (coll, b)))

    def run_view(self, q: dict[str, str]) -> HTMLResponse:
        entity, project, run_id = q.get("entity", ""), q.get("project", ""), q.get("id", "")
        check_name(entity, "entity")
        check_name(project, "project")
        if not run_id:
            raise InvalidInput("a run page needs ?id=RUN_ID")
        return self.render("run.html", page=views.run_page(self.store, entity, project, run_id))

    # -- edits -------------------------------------------------------------------
    def _back(self, form: dict[str, str]) -> RedirectResponse:
        return RedirectResponse(link("version", entity=form.get("entity"), project=form.get("project"),
                                     name=form.get("name"), v=form.get("v")), status_code=303)

    def alias_edit(self, form: dict[str, str]) -> Response:
        coll = _coll(form)
        target = _number(form.get("to", ""), "to")
        views.move_alias(self.store, coll, form.get("alias", ""), target, form.get("expected", ""))
        return self._back(form)

    def description_edit(self, form: dict[str, str]) -> Response:
        coll = _coll(form)
        revision = form.get("revision", "")
        if not _digits(revision):
            raise InvalidInput("the form lacks the annotations' revision; reload the page")
        tags = _tags(form["tags"]) if "tags" in form else None  # a form without the field leaves them be
        views.edit_description(self.store, coll, _number(form.get("v", ""), "v"), int(revision),
                               form.get("description", ""), tags)
        return self._back(form)

    def collection_edit(self, form: dict[str, str]) -> Response:
        coll = _coll(form)
        revision = form.get("revision", "")
        if not _digits(revision):
            raise InvalidInput("the form lacks the annotations' revision; reload the page")
        tags = _tags(form.get("tags", ""))
        views.edit_collection(self.store, coll, int(revision), form.get("description", ""), tags)
        return RedirectResponse(link("collection", entity=coll.entity, project=coll.project, name=coll.name),
                                status_code=303)
