"""How every `mussikon` list and show command prints: a table for people, one JSON document
with `--json`, whole ids, paging options, unique id prefixes, and confirmation before
destroying anything.

Every value that came from outside (names, titles, reasons, message bodies) reaches the
terminal as `rich.text.Text`, which is never parsed as markup: a musician named
`[link=http://evil.example]x[/link]` is printed as those characters.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y",
                                         help="Do it without asking for confirmation.")]


def limit_option(default: int, what: str = "items") -> Any:
    """`--limit N`: at most N `what` (1 or more)."""
    return typer.Option("--limit", min=1, help=f"At most this many {what}.")


class CommandFailed(Exception):
    """A one-line error for the user (exit code 1)."""


def plain(value: object) -> Text:
    """A value from outside as literal text: never markup, never highlighted."""
    return Text("" if value is None else str(value))


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]], *,
          ids: Iterable[str] = ()) -> Table:
    """A table whose cells are literal text. Columns named in `ids` are never cut or wrapped
    (an id is copied from here into the next command); the others wrap."""
    materialised = [list(row) for row in rows]
    whole = set(ids)
    result = Table(title=plain(title))
    for n, name in enumerate(columns):
        if name in whole:
            widest = max((len(str(row[n])) for row in materialised), default=0)
            result.add_column(name, no_wrap=True, min_width=max(widest, len(name)))
        else:
            result.add_column(name, overflow="fold")
    for row in materialised:
        result.add_row(*(plain(cell) for cell in row))
    return result


NARROWEST_COLUMN = 8
"""Width below which a wrapping column of a table is no longer worth reading."""


def print_table(console: Console, title: str, columns: Sequence[str],
                rows: Iterable[Sequence[object]], *, ids: Iterable[str] = ()) -> None:
    """Print `table(title, columns, rows, ids=ids)`; on a console too narrow for its id
    columns whole beside the others, each row as `column: value` lines instead, so that no
    id is ever cut (an 80-column terminal holds one 36-character id, not two)."""
    materialised = [list(row) for row in rows]
    whole = set(ids)

    def width(n: int, name: str) -> int:
        natural = max([len(name), *(len(str(row[n])) for row in materialised)])
        return natural if name in whole else min(natural, NARROWEST_COLUMN)

    needed = 1 + sum(3 + width(n, name) for n, name in enumerate(columns))  # with borders
    if needed <= console.width:
        console.print(table(title, columns, materialised, ids=whole))
        return
    console.print(plain(title), soft_wrap=True)
    for row in materialised:
        console.print()
        for name, cell in zip(columns, row, strict=True):
            console.print(plain(f"{name}: {'' if cell is None else cell}"), soft_wrap=True)


def to_json(value: object) -> Any:
    """A value as JSON sees it: times in ISO 8601, decimals exact (as strings), ids as text."""
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def print_json(document: object) -> None:
    """One JSON document on stdout, nothing else there."""
    sys.stdout.write(json.dumps(to_json(document), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def console_for_output() -> Console:
    """The console for tables: on a terminal its own width; piped, wide enough that nothing
    is cut (rich would otherwise assume 80 columns)."""
    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(highlight=False, width=10_000, soft_wrap=True)


def resolve_id(given: str, known: Iterable[str], what: str) -> str:
    """The one id among `known` that is `given` or starts with it; a one-line error naming the
    candidates when there is none or more than one."""
    candidates = sorted(set(known))
    if given in candidates:
        return given
    matches = [c for c in candidates if c.startswith(given)] if given else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CommandFailed(f"no {what} {given!r}")
    shown = ", ".join(matches[:5]) + (", …" if len(matches) > 5 else "")
    raise CommandFailed(f"{given!r} names {len(matches)} {what}s ({shown}): give more of the id")


def confirm(question: str, yes: bool) -> None:
    """Go on only if `--yes` was given or a person at a terminal answers yes; otherwise a
    one-line error (a script must say `--yes`)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CommandFailed(f"{question.rstrip('?')}: refused without --yes "
                            "(no terminal to ask)")
    if not typer.confirm(question, default=False):
        raise CommandFailed("cancelled")
