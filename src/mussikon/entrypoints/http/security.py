"""Authentication (a bearer API key or token) and the role checks of each route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mussikon.entrypoints.http.accounts import Principal, Role
from mussikon.entrypoints.http.state import ApiState, api_state

_bearer = HTTPBearer(auto_error=False, description="An API key (`mk_…`, from `mussikon users "
                                                   "add`) or a token from `POST /token`")

UNAUTHORIZED = HTTPException(status.HTTP_401_UNAUTHORIZED,
                             "a valid API key or token is needed (Authorization: Bearer …)",
                             headers={"WWW-Authenticate": "Bearer"})


async def caller(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                 state: Annotated[ApiState, Depends(api_state)]) -> Principal:
    """Who is calling: 401 without a bearer credential, or with one that names nobody."""
    if credentials is None:
        raise UNAUTHORIZED
    principal = await state.accounts.authenticate(credentials.credentials)
    if principal is None:
        raise UNAUTHORIZED
    return principal


def require(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, who must have one of `roles` (403 otherwise)."""
    allowed = frozenset(roles)

    async def check(principal: Annotated[Principal, Depends(caller)]) -> Principal:
        if principal.role not in allowed:
            raise forbidden(f"the role {principal.role.value} may not do this (only "
                            f"{', '.join(sorted(r.value for r in allowed))})")
        return principal

    return check


def forbidden(why: str) -> HTTPException:
    """403, with the reason."""
    return HTTPException(status.HTTP_403_FORBIDDEN, why)


def acts_for(principal: Principal, party_id: str | None) -> str:
    """The musician or organizer id a command acts as: a musician or organizer acts only as
    themselves (403 for another's id); an operator or a service names the party."""
    if principal.role in (Role.MUSICIAN, Role.ORGANIZER):
        if party_id not in (None, principal.subject_id):
            raise forbidden(f"{principal.name} acts only as {principal.role.value} "
                            f"{principal.subject_id}")
        return principal.subject_id
    if not party_id:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"the role {principal.role.value} must name the party it acts for")
    return party_id


def owns(principal: Principal, *party_ids: str) -> None:
    """A musician or organizer may touch only what they are a party to (403 otherwise);
    an operator or a service may touch anything its route allows."""
    if principal.role in (Role.MUSICIAN, Role.ORGANIZER) \
            and principal.subject_id not in party_ids:
        raise forbidden(f"{principal.name} is not a party to this")
