"""What the dashboard keeps while it is served: the sampled figures, the rebuilds under way,
and the signal that ends its live streams when the server stops."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastapi import Request

from mussikon.entrypoints.http.dashboard.samples import Sampler


@dataclass
class Rebuild:
    """A projection being rebuilt (or rebuilt): how far it went."""

    name: str
    who: str
    total: int | None
    read: int = 0
    position: int = 0
    done: bool = False
    error: str = ""
    task: asyncio.Task[None] | None = None


@dataclass
class Board:
    """The dashboard's state in the serving process."""

    sampler: Sampler
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    rebuilds: dict[str, Rebuild] = field(default_factory=dict)


def board(request: Request) -> Board:
    """The dashboard of the app serving this request (a FastAPI dependency)."""
    state: Board = request.app.state.dashboard
    return state
