"""Who may use the dashboard: operators, logged in through a form that sets a cookie holding
their token (HttpOnly, SameSite=Strict), or calling with `Authorization: Bearer KEY`.

Cross-site requests cannot act: the cookie is SameSite=Strict, so a request another site
starts carries no token; every action is a POST (a GET changes nothing); and a POST whose
`Origin` names another host is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute

from mussikon.entrypoints.http.accounts import Principal, Role
from mussikon.entrypoints.http.dashboard.pages import render
from mussikon.entrypoints.http.state import ApiState, api_state

COOKIE = "mussikon_dashboard"
PATH = "/dashboard"

class NotOperator(Exception):
    """The request may not see the dashboard: `status` 401 (nobody, or a token that names
    nobody) or 403 (not an operator, or a cross-site action)."""

    def __init__(self, status: int, why: str, who: str = "") -> None:
        super().__init__(why)
        self.status, self.why, self.who = status, why, who


def credential(request: Request) -> str | None:
    """The bearer credential of the request, else the dashboard's cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE) or None


async def operator(request: Request, state: Annotated[ApiState, Depends(api_state)]
                   ) -> Principal:
    """The operator making the request (a dependency of every dashboard page)."""
    given = credential(request)
    principal = await state.accounts.authenticate(given) if given else None
    if principal is None:
        raise NotOperator(401, "log in as an operator to see the dashboard")
    if principal.role is not Role.OPERATOR:
        raise NotOperator(403, f"the role {principal.role.value} may not see the dashboard "
                               "(only operator)", principal.name)
    if request.method == "POST" and not _same_origin(request):
        raise NotOperator(403, "an action must come from the dashboard's own pages",
                          principal.name)
    return principal


Operator = Annotated[Principal, Depends(operator)]


def _same_origin(request: Request) -> bool:
    """True unless the request names an origin other than this host (browsers name it on
    every POST; a client that names none is not a browser led by another site)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def refused(request: Request, exc: NotOperator) -> Response:
    """The page for a request refused: the login form (401) or why not (403)."""
    if exc.status == 401:
        return render(request, "login.html", 401, error="", why=exc.why)
    return render(request, "refused.html", 403, why=exc.why, who=exc.who)


class DashboardRoute(APIRoute):
    """A route of the dashboard: a request refused gets a page (`refused`), not JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await handle(request)
            except NotOperator as exc:
                return refused(request, exc)

        return handler


router = APIRouter(route_class=DashboardRoute)


@router.get("/dashboard/login")
async def login_page(request: Request) -> Response:
    """The login form."""
    return render(request, "login.html", error="", why="")


@router.post("/dashboard/login")
async def login(request: Request, state: Annotated[ApiState, Depends(api_state)],
                username: Annotated[str, Form(max_length=64)],
                password: Annotated[str, Form(max_length=1024)]) -> Response:
    """Check the password; an operator gets the cookie and the dashboard."""
    if not _same_origin(request):
        return render(request, "refused.html", 403, who="",
                      why="log in from the dashboard's own login page")
    principal = await state.accounts.by_password(username, password)
    if principal is None:
        return render(request, "login.html", 401, error="wrong user name or password", why="")
    if principal.role is not Role.OPERATOR:
        return render(request, "refused.html", 403, who=principal.name,
                      why=f"the role {principal.role.value} may not see the dashboard "
                          "(only operator)")
    response = RedirectResponse(PATH, 303)
    response.set_cookie(COOKIE, state.accounts.issue_token(principal),
                        max_age=state.accounts.token_ttl, path=PATH, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/dashboard/logout")
async def logout() -> Response:
    """Forget the cookie."""
    response = RedirectResponse(f"{PATH}/login", 303)
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")
    return response
