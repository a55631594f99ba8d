"""The change feed's continuation protocol without a server: `CosmosFeed` through the SDK's
own pull model (its continuation tokens, `If-None-Match`, 304 Not Modified), against the
HTTP exchanges recorded from the local server (`tests/cosmos_recorded`, whose change feed
answers as the service's: `etag` the last change's sequence number, 304 when nothing
changed after the `If-None-Match` sent)."""

from __future__ import annotations

import json
from pathlib import Path

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
        seen = await scenario.run(account, nothing_to_write)
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
