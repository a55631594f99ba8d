"""The change feed's continuation protocol without a server: `CosmosFeed` through the SDK's
own pull model (its continuation tokens, `If-None-Match`, 304 Not Modified), against the
HTTP exchanges recorded from the local server (`tests/cosmos_recorded`, whose change feed
answers as the service's: `etag` the last change's sequence number, 304 when nothing
changed after the `If-None-Match` sent)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from tests.cosmos_recorded import scenario
from tests.cosmos_recorded.transport import ReplayTransport

RECORDED = Path(__file__).parent.parent / "cosmos_recorded"


async def nothing_to_write(step: str) -> None:
    """The recorded responses already hold what was written."""


async def test_a_range_is_read_page_by_page_through_the_sdk_s_tokens_then_not_modified(
        ) -> None:
    transport = ReplayTransport.load(RECORDED / "change_feed.json")
    account = scenario.reader_account("https://127.0.0.1:8081/", transport)
    try:
        seen, _, _ = await scenario.run(account, nothing_to_write)
    finally:
        await account.close()
    assert seen == [
        1,  # one feed range
        ([("musician-a", 1), ("musician-a", 2)], True),  # from the beginning, 2 a page
        ([("musician-a", 3)], True),  # If-None-Match: the etag of the page before
        ([], False),  # 304 Not Modified: nothing, and the checkpoint stays
        True,  # caught up (304)
        False,  # stream B written: behind (200, one item)
        ([("musician-b", 1), ("musician-b", 2)], True),
        ([], False),
        7,  # change-feed requests, each counted once
    ]
    # every recorded exchange was asked for (but a second read of the account, which the
    # recording client made in the background)
    assert [e["request"]["path"] for e in transport.pending] in ([], ["/"])
    feed_reads = [r for r in transport.sent if r["path"].endswith("/docs/")]
    assert [r.get("if-none-match") for r in feed_reads] == [
        None, '"5"', '"6"', '"6"', '"6"', '"6"', '"8"']


def test_the_recording_answers_as_the_service_does() -> None:
    exchanges = json.loads((RECORDED / "change_feed.json").read_text())
    reads = [e for e in exchanges if e["request"]["path"].endswith("/docs/")]
    assert all(e["request"]["a-im"] == "Incremental Feed" for e in reads)
    # a page's etag is its last change; 304 Not Modified repeats the one it was asked after
    assert [(e["response"]["status"], e["response"]["headers"]["etag"]) for e in reads] == [
        (200, '"5"'), (200, '"6"'), (304, '"6"'), (304, '"6"'), (200, '"7"'), (200, '"8"'),
        (304, '"8"')]
    for read in reads:
        if read["response"]["status"] == 200:
            lsns = [item["_lsn"] for item in read["response"]["body"]["Documents"]]
            assert f'"{lsns[-1]}"' == read["response"]["headers"]["etag"]


def _split(key: dict[str, Any], recorded: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The service after its one partition key range ("0", the whole range) split in two
    ("1": "" to "7F", "2": "7F" to "FF"), written by hand after its protocol: a read of the
    gone range is answered 410 Gone, substatus 1002; the ranges now name "0" as their parent;
    a new event (stream C, change 9) is in range "1"."""
    path, range_id = key["path"], key.get("x-ms-documentdb-partitionkeyrangeid")
    json_type = {"content-type": "application/json"}
    if path.endswith("/pkranges/"):
        if key.get("if-none-match") == "2":
            return {"status": 304, "headers": {"etag": "2", **json_type}, "body": None}
        listing = next(e["response"]["body"] for e in recorded
                       if e["request"]["path"] == path and e["response"]["status"] == 200)
        whole = listing["PartitionKeyRanges"][0]
        children = [{**whole, "id": "1", "_rid": "gAABAIAAAAEBAAAAAAAAUA==",
                     "maxExclusive": "7F", "parents": ["0"]},
                    {**whole, "id": "2", "_rid": "gAABAIAAAAECAAAAAAAAUA==",
                     "minInclusive": "7F", "parents": ["0"]}]
        return {"status": 200, "headers": {"etag": "2", "x-ms-item-count": "2", **json_type},
                "body": {**listing, "PartitionKeyRanges": children, "_count": 2}}
    if not path.endswith("/docs/"):
        return None
    if range_id == "0":
        return {"status": 410, "headers": {"x-ms-substatus": "1002", **json_type},
                "body": {"code": "Gone", "message": "PartitionKeyRangeGone"}}
    if range_id == "1" and key.get("if-none-match") == '"8"':
        page = next(e["response"]["body"] for e in recorded
                    if e["response"]["headers"].get("etag") == '"8"'
                    and e["response"]["status"] == 200)
        item = json.loads(json.dumps(page["Documents"][0]).replace("musician-b", "musician-c"))
        item.update(id="4c0e5d0e-9a51-4a43-9f3e-0d1b8b8a0c11", _lsn=9)
        return {"status": 200, "headers": {"etag": '"9"', "x-ms-item-count": "1", **json_type},
                "body": {**page, "Documents": [item], "_count": 1}}
    etag = key.get("if-none-match", "")
    return {"status": 304, "headers": {"etag": etag, **json_type}, "body": None}


async def test_a_split_range_goes_on_in_both_halves_under_the_same_checkpoint() -> None:
    recorded = json.loads((RECORDED / "change_feed.json").read_text())
    split = False
    transport = ReplayTransport(recorded, lambda key: _split(key, recorded) if split else None)
    account = scenario.reader_account("https://127.0.0.1:8081/", transport)
    try:
        _, part, checkpoint = await scenario.run(account, nothing_to_write)
        split = True
        transport.sent.clear()
        page = await part.read(checkpoint, 10)
        # the SDK re-read the ranges and read the halves, from the etag the range was at
        assert [(r.stream_id, r.version) for r in page.events] == [("musician-c", 1)]
        reads = [(r.get("x-ms-documentdb-partitionkeyrangeid"), r.get("if-none-match"))
                 for r in transport.sent if r["path"].endswith("/docs/")]
        assert reads == [("0", '"8"'), ("1", '"8"')]
        # the checkpoint: one token of the pinned range, holding both halves
        state = json.loads(base64.b64decode(page.checkpoint))["continuation"]
        assert state["Range"]["min"] == "" and state["Range"]["max"] == "FF"
        assert sorted((c["range"]["min"], c["range"]["max"], c["token"])
                      for c in state["continuation"]) == [("", "7F", '"9"'), ("7F", "FF", '"8"')]
        transport.sent.clear()
        assert await part.caught_up(page.checkpoint)  # each half asked, from where it is
        assert sorted((r.get("x-ms-documentdb-partitionkeyrangeid"), r.get("if-none-match"))
                      for r in transport.sent if r["path"].endswith("/docs/")) == [
            ("1", '"9"'), ("2", '"8"')]
    finally:
        await account.close()
