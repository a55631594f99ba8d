"""`python -m chaos [SCENARIO…]`: run the chaos scenarios (all, by default), each printing its
line; exit 1 if any lost, doubled or dead-lettered anything (or could not run)."""

from __future__ import annotations

import asyncio
import logging
import sys
import traceback

from chaos.harness import report
from chaos.scenarios import SCENARIOS


def main(names: list[str]) -> int:
    # The harness looks into the broker through nodes that may be down; each failed try is
    # logged by aiormq, and only what the scenario makes of it matters here.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        print(f"error: no scenario {unknown[0]!r} (there are: {', '.join(SCENARIOS)})",
              file=sys.stderr)
        return 1
    failed = []
    for name in names or list(SCENARIOS):
        try:
            tally = asyncio.run(SCENARIOS[name]())
        except Exception:
            traceback.print_exc()
            print(f"{name}: did not run to its end", flush=True)
            failed.append(name)
            continue
        if not report(name, tally):
            failed.append(name)
    if failed:
        print(f"chaos: {', '.join(failed)} failed", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
