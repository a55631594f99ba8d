"""`mussikon analytics`: what the analytics read model has counted."""

from __future__ import annotations

from collections import Counter

from mussikon.entrypoints.cli.common import opened, run
from mussikon.entrypoints.cli.output import (
    JsonOption,
    console_for_output,
    print_json,
    print_table,
)


def _sorted(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items()))


def analytics(json_: JsonOption = False) -> None:
    """What the marketplace's analytics have counted: events by kind, by genre and by
    location; the money contracted (contracts signed) and paid (payments completed).
    `--json` prints the amounts as exact decimal strings."""
    async def go() -> None:
        async with opened(read_only=True) as application:
            summary = await application.analytics.summary()
        if json_:
            print_json({"by_kind": _sorted(summary.by_kind),
                        "by_genre": _sorted(summary.by_genre),
                        "by_location": _sorted(summary.by_location),
                        "contracted": summary.contracted, "paid": summary.revenue})
            return
        out = console_for_output()
        for title, counts in (("by kind", summary.by_kind), ("by genre", summary.by_genre),
                              ("by location", summary.by_location)):
            print_table(out, title, (title.removeprefix("by "), "count"),
                        _sorted(counts).items())
        print_table(out, "money", ("what", "amount"),
                    (("contracted", summary.contracted), ("paid", summary.revenue)))

    run(go)
