"""`POST /token`: the OAuth2 password flow, a token (JWT) for a user with a password."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm

from mussikon.entrypoints.http import models
from mussikon.entrypoints.http.state import ApiState, api_state

router = APIRouter(tags=["auth"])


@router.post("/token", response_model=models.Token)
async def token(form: Annotated[OAuth2PasswordRequestForm, Depends()],
                state: Annotated[ApiState, Depends(api_state)]) -> models.Token:
    """A token for `username` and `password` (form fields), to send as
    `Authorization: Bearer TOKEN`; 401 if they do not match."""
    principal = await state.accounts.by_password(form.username, form.password)
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong user name or password",
                            headers={"WWW-Authenticate": "Bearer"})
    return models.Token(access_token=state.accounts.issue_token(principal),
                        expires_in=state.accounts.token_ttl)
