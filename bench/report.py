"""Benchmark results: one shape for every benchmark, as JSON for scripts and as a table for people.

```json
{"benchmark": "store-sqlite",
 "results": [{"workload": "append-new-stream", "unit": "events/s", "ours": 3100.0,
              "peers": {"raw-sqlite3": 3300.0, "pyeventsourcing": 1500.0}}]}
```

Throughput units (`…/s`) are better when higher; latency units (`ms`) when lower. A ratio
in the table is always "how many times better ours is": ours/peer for throughput,
peer/ours for latency, so above 1 means ours wins. A result measured against itself (a
growth ratio: the same measure late in a run over early in it, no peer) has a `ceiling`
instead: the most `ours` may be.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


@dataclass(slots=True)
class Result:
    """One workload: our figure and each peer's, measured in the same run."""

    workload: str
    unit: str
    ours: float
    peers: dict[str, float] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)
    """Minimum advantage wanted over a peer (see `advantage`); shown in the table, not in JSON."""
    ceiling: float | None = None
    """The most `ours` may be (a growth ratio, lower is better); shown in the table, not in
    JSON."""

    @property
    def higher_is_better(self) -> bool:
        """Throughput (`…/s`) is better higher; latency (`ms`, `s`) is better lower."""
        return self.unit.endswith("/s")

    def advantage(self, peer: str) -> float | None:
        """How many times better ours is than `peer` (above 1: ours is better)."""
        theirs = self.peers.get(peer)
        if not theirs or not self.ours:
            return None
        return self.ours / theirs if self.higher_is_better else theirs / self.ours

    def meets_targets(self) -> bool:
        """True if every target is met, the ceiling included."""
        return (all((self.advantage(p) or 0.0) >= t for p, t in self.targets.items())
                and (self.ceiling is None or self.ours <= self.ceiling))

    def to_json(self) -> dict[str, Any]:
        """The DESIGN.md shape of one result."""
        return {"workload": self.workload, "unit": self.unit, "ours": round(float(self.ours), 1),
                "peers": {name: round(float(value), 1) for name, value in self.peers.items()}}


@dataclass(slots=True)
class Report:
    """A benchmark's results, with the settings they were measured at."""

    benchmark: str
    results: list[Result] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    """Shown under the table (durability setting, sizes …); not part of the JSON shape."""

    @property
    def peer_names(self) -> list[str]:
        """Every peer that appears in any result, in first-seen order."""
        names: dict[str, None] = {}
        for result in self.results:
            names.update(dict.fromkeys(result.peers))
        return list(names)

    def to_json(self) -> dict[str, Any]:
        """The DESIGN.md shape: `{"benchmark": …, "results": [...]}`."""
        return {"benchmark": self.benchmark, "results": [r.to_json() for r in self.results]}

    def dumps(self) -> str:
        """The JSON document, on one line."""
        return json.dumps(self.to_json())

    def table(self) -> Table:
        """A rich table: ours, each peer, and how many times better ours is than each peer
        (with the target, green when met, red when not)."""
        peers = self.peer_names
        units = {r.unit for r in self.results}
        one_unit = units.pop() if len(units) == 1 else None
        title = f"{self.benchmark} ({one_unit})" if one_unit else self.benchmark
        caption = ", ".join(f"{k}={v}" for k, v in self.settings.items()) or None
        table = Table(title=title, caption=caption)
        table.add_column("workload", no_wrap=True)
        if one_unit is None:
            table.add_column("unit")
        table.add_column("ours", justify="right", style="bold")
        for peer in peers:
            table.add_column(peer, justify="right", overflow="fold")
            table.add_column(f"ours ÷ {peer}" if len(peers) == 1 else "ratio", justify="right")
        ceilings = any(r.ceiling is not None for r in self.results)
        if ceilings:
            table.add_column("ceiling", justify="right")
        for result in self.results:
            cells: list[str | Text] = [result.workload]
            if one_unit is None:
                cells.append(result.unit)
            cells.append(_number(result.ours))
            for peer in peers:
                cells.append(_number(result.peers[peer]) if peer in result.peers else "")
                cells.append(_ratio(result, peer))
            if ceilings:
                cells.append(_ceiling(result))
            table.add_row(*cells)
        return table

    def markdown(self) -> str:
        """The table as Markdown (for bench/RESULTS.md): ours, each peer, each ratio."""
        peers = self.peer_names
        ceilings = any(r.ceiling is not None for r in self.results)
        head = ["workload", "unit", "ours", *peers, *(f"ours ÷ {p}" for p in peers)]
        head += ["ceiling"] if ceilings else []
        lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for r in self.results:
            cells = [f"`{r.workload}`", r.unit, _number(r.ours)]
            cells += [_number(r.peers[p]) if p in r.peers else "—" for p in peers]
            for p in peers:
                advantage = r.advantage(p)
                target = r.targets.get(p)
                cell = "—" if advantage is None else f"{advantage:.2f}×"
                if advantage is not None and target is not None:
                    cell += f" (target {target:g}: {'met' if advantage >= target else 'missed'})"
                cells.append(cell)
            if ceilings:
                cells.append("—" if r.ceiling is None else
                             f"≤ {r.ceiling:g}: {'met' if r.ours <= r.ceiling else 'missed'}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def render(self, console: Console | None = None) -> None:
        """Print the table."""
        (console or Console()).print(self.table())


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def _ratio(result: Result, peer: str) -> str | Text:
    advantage = result.advantage(peer)
    if advantage is None:
        return ""
    target = result.targets.get(peer)
    text = f"{advantage:.2f}×"
    if target is None:
        return text
    met = advantage >= target
    return Text(f"{text} {'≥' if met else '<'}{target:g}", style="green" if met else "red")


def _ceiling(result: Result) -> str | Text:
    if result.ceiling is None:
        return ""
    met = result.ours <= result.ceiling
    return Text(f"{'≤' if met else '>'}{result.ceiling:g}", style="green" if met else "red")


def from_json(document: Mapping[str, Any]) -> Report:
    """Read a report back from its JSON shape (targets and settings are not in it)."""
    return Report(
        benchmark=str(document["benchmark"]),
        results=[Result(workload=str(r["workload"]), unit=str(r["unit"]), ours=float(r["ours"]),
                        peers={str(k): float(v) for k, v in r["peers"].items()})
                 for r in document["results"]],
    )
