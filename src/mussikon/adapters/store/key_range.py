"""Which keys a scan reads, as one range of the (collection, key) index.

A prefix is a range too: the keys that start with "ab" are those from "ab" (included) to
"ac" (excluded), in code-point order, which is the order of every store's keys. So a prefix
scan is an index range read, never a filter over the whole collection.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

_LAST = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def after_prefix(prefix: str) -> str | None:
    """The least string after every string that starts with `prefix` (None: every string
    does, or every one from there on)."""
    while prefix:
        following = ord(prefix[-1]) + 1
        if following <= _LAST:
            if following in _SURROGATES:  # no stored key holds one: skip them
                following = _SURROGATES.stop
            return prefix[:-1] + chr(following)
        prefix = prefix[:-1]
    return None


@dataclass(frozen=True, slots=True)
class KeyRange:
    """The keys from `lower` (after it if `lower_open`) up to `upper` excluded (None: no end)."""

    lower: str
    lower_open: bool
    upper: str | None

    @classmethod
    def of(cls, prefix: str = "", *, after: str | None = None,
           before: str | None = None) -> KeyRange:
        """The keys that start with `prefix`, come after `after` and before `before`."""
        if after is not None and after >= prefix:
            lower, lower_open = after, True
        else:
            lower, lower_open = prefix, False
        upper = after_prefix(prefix)
        if before is not None and (upper is None or before < upper):
            upper = before
        return cls(lower, lower_open, upper)

    def sql(self, marks: Iterator[str]) -> tuple[str, list[str]]:
        """The condition on the column `key`, with a placeholder from `marks` for each value,
        and the values."""
        condition = f"key {'>' if self.lower_open else '>='} {next(marks)}"
        if self.upper is None:
            return condition, [self.lower]
        return f"{condition} AND key < {next(marks)}", [self.lower, self.upper]
