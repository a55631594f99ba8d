"""The chaos scenarios' count (`chaos/audit.py`) sees what it claims to: a unit whose
commands were all handled counts five handled, a unit the store never got counts five lost,
and an effect made twice counts as doubled."""

from __future__ import annotations

import json
from pathlib import Path

from chaos.audit import audit
from chaos.workload import send_unit

from mussikon.application import templates
from mussikon.bootstrap import open_app
from mussikon.config import Settings


async def test_the_audit_counts_handled_lost_and_doubled_commands(tmp_path: Path) -> None:
    app = await open_app(Settings(store_url="memory://", broker_url="memory://"))
    await app.start()
    try:
        units = [(await send_unit(app.marketplace, n))[0] for n in range(3)]
        await app.settle()
        journal = tmp_path / "journal.jsonl"
        journal.write_text("".join(json.dumps(unit) + "\n" for unit in units))
        tally = await audit(app, journal, dead_lettered=0)
        assert (tally.sent, tally.handled, tally.lost, tally.doubled) == (15, 15, 0, 0)
        assert tally.clean
        assert tally.line("x") == "x: 15 sent, 15 handled, 0 lost, 0 doubled, 0 dead-lettered"

        never_sent = {key: f"never-{key}" for key in units[0]}
        # A second welcome for the first musician, as a handler running twice under another
        # event id would send it.
        await app.notifier.send(templates.welcome(
            "Musician 0", "again@chaos.example", "another-event", musician_id=units[0]["musician"]))
        with journal.open("a") as out:
            out.write(json.dumps(never_sent) + "\n")
        tally = await audit(app, journal, dead_lettered=1)
        assert (tally.sent, tally.handled, tally.lost, tally.doubled, tally.dead_lettered) == (
            20, 14, 5, 1, 1)
        assert not tally.clean
    finally:
        await app.close()
