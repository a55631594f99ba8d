"""The interactive documentation (Swagger UI and ReDoc), served from files that come with the
package `fastapi-offline`: no CDN, so it works without a network."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"


def _assets() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def install(api: FastAPI) -> None:
    """Serve /docs and /redoc (the application must be made with docs_url=None and
    redoc_url=None) and the files they load under /docs-assets."""
    api.mount(ASSETS, StaticFiles(directory=_assets()), name="docs-assets")

    @api.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{api.title} — API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png")

    @api.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{api.title} — API",
                              redoc_js_url=f"{ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{ASSETS}/favicon.png", with_google_fonts=False)
