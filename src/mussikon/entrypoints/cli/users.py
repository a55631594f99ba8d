"""`mussikon users add|list|remove`: the users of the HTTP API, their roles, and the API keys
they call it with (shown once, when added; never listed)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from mussikon.bootstrap import App
from mussikon.entrypoints.cli.common import opened, run
from mussikon.entrypoints.cli.output import (
    CommandFailed,
    JsonOption,
    YesOption,
    confirm,
    console_for_output,
    limit_option,
    plain,
    print_json,
    print_table,
)
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
            accounts = await _accounts(application)
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


async def _accounts(application: App) -> Accounts:
    settings = application.settings
    return Accounts(application.documents, await token_secret(
        application.documents, settings.api_secret.get_secret_value()), settings.api_token_ttl)


@users_app.command("list")
def users_list(
        limit: Annotated[int, limit_option(100, "users")] = 100,
        after: Annotated[str, typer.Option(
            "--after", help="Only the users after this name (the last of the page before).")]
        = "",
        as_json: JsonOption = False) -> None:
    """The users, by name: their role, the musician or organizer id they act as, whether they
    have a password, when they were added. Never their key or password hash."""
    async def go() -> None:
        async with opened(read_only=True) as application:
            users = await Accounts(application.documents, "", 0).users(after=after,
                                                                        limit=limit)
        if as_json:
            print_json({"users": [{
                "name": u.name, "role": u.role.value, "acting_as": u.subject_id or None,
                "password": u.has_password, "created_at": u.created_at} for u in users],
                "next_after": users[-1].name if len(users) == limit else None})
            return
        console = console_for_output()
        print_table(console, f"{len(users)} user(s)",
                    ("name", "role", "acting as", "password", "added"),
                    ((u.name, u.role.value, u.subject_id, "yes" if u.has_password else "no",
                      u.created_at.strftime("%Y-%m-%d %H:%M:%S")) for u in users),
                    ids=("name", "acting as"))
        if len(users) == limit:
            console.print(plain(f"more: --after {users[-1].name}"))

    run(go)


@users_app.command("remove")
def users_remove(
        name: Annotated[str, typer.Argument(help="The user's name.")],
        yes: YesOption = False) -> None:
    """Remove a user: their API key, their password and the tokens issued to them stop
    working at once, in every process serving the store. The musician or organizer they
    acted as stays registered."""
    async def go() -> None:
        async with opened() as application:
            accounts = Accounts(application.documents, "", 0)
            user = await accounts.user(name)
            if user is None:
                raise CommandFailed(f"no user {name!r} (mussikon users list shows them)")
            confirm(f"Remove user {name} ({user.role.value}) and revoke their key for good?",
                    yes)
            try:
                await accounts.remove(name)
            except AccountError as exc:
                raise CommandFailed(str(exc)) from None
        Console(stderr=True, highlight=False, soft_wrap=True).print(plain(
            f"user {name} removed: their key and password no longer work"))

    run(go)
