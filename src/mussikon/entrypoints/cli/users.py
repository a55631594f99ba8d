"""`mussikon users add`: a user of the HTTP API, with a role, and the API key they call it with."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from mussikon.entrypoints.cli.common import opened, run
from mussikon.entrypoints.cli.output import CommandFailed, plain
from mussikon.entrypoints.http.accounts import AccountError, Accounts, Role, token_secret

users_app = typer.Typer(help="Users of the HTTP API and their keys.", no_args_is_help=True)


@users_app.command("add")
def add(name: Annotated[str, typer.Argument(help="The user's name (letters, digits, _.@-).")],
        role: Annotated[Role, typer.Option("--role", help="What the user may do.",
                                           case_sensitive=False)],
        subject: Annotated[str, typer.Option(
            "--id", help="musician or organizer: the id they act as (default: a new one, "
                         "under which they register)")] = "",
        password: Annotated[bool, typer.Option(
            "--password", help="Also set a password, for tokens from POST /token: asked on a "
                               "terminal, else read from the first line of stdin.")] = False,
        ) -> None:
    """Add a user and print their API key (shown this once: only its digest is kept), to
    send as `Authorization: Bearer KEY`."""
    secret_text: str | None = None
    if password:
        if sys.stdin.isatty():
            secret_text = typer.prompt("password", hide_input=True, confirmation_prompt=True)
        else:
            secret_text = sys.stdin.readline().rstrip("\n")
        if len(secret_text) < 8:
            raise CommandFailed("--password: at least 8 characters")
    if subject and role not in (Role.MUSICIAN, Role.ORGANIZER):
        raise CommandFailed("--id: only for the roles musician and organizer")

    async def go() -> None:
        async with opened() as application:
            settings = application.settings
            accounts = Accounts(application.documents, await token_secret(
                application.documents, settings.api_secret.get_secret_value()),
                settings.api_token_ttl)
            try:
                principal, key = await accounts.add(name, role, subject_id=subject,
                                                    password=secret_text)
            except AccountError as exc:
                raise CommandFailed(str(exc)) from None
        acting = f" as {role.value} {principal.subject_id}" if principal.subject_id else ""
        Console(stderr=True, highlight=False, soft_wrap=True).print(plain(
            f"user {name} ({role.value}){acting}; the API key below is shown once"))
        typer.echo(key)

    run(go)
