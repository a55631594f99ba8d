"""Rendering the dashboard's pages: Jinja2 templates from the package, every value escaped
(autoescape), and the headers every page carries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined

_templates = Environment(loader=PackageLoader("mussikon.entrypoints.http.dashboard", "templates"),
                         autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                         lstrip_blocks=True)

SECURITY_HEADERS = {
    # No script, style or image from anywhere but the package's own files; no framing.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def when(value: datetime | str | None, *, ms: bool = False) -> str:
    """A time as an operator reads it (UTC, to the second or millisecond)."""
    if value is None or value == "":
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    text = moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    return text[:-3] if ms else text[:-7]


_templates.filters["when"] = when


def render(request: Request, template: str, status_code: int = 200, *,
           operator: str = "", **context: Any) -> HTMLResponse:
    """The page `template` with `context`; `operator` names who is logged in (for the
    header)."""
    html = _templates.get_template(template).render(
        operator=operator, path=request.url.path, **context)
    return HTMLResponse(html, status_code, headers=SECURITY_HEADERS)
