"""Scans of the document stores read one range of the (collection, key) index: a prefix,
`after` and `before` bound the range itself, so the rows outside it are never read (the
plans are asked of each database with EXPLAIN)."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import uuid4

import asyncpg
import pytest

from mussikon.adapters.store.key_range import KeyRange
from mussikon.adapters.store.postgres import PostgresDocumentStore
from mussikon.adapters.store.sqlite import SqliteDatabase, SqliteDocumentStore
from mussikon.ports.documents import Changes
from tests.contract.store_adapters import postgres_stores

RANGES = [
    pytest.param(KeyRange.of("g-0042/"), None, 30, id="prefix"),
    pytest.param(KeyRange.of("g-0042/", after="g-0042/0010"), 5, 5, id="prefix-after"),
    pytest.param(KeyRange.of(after="g-0100/", before="g-0101/"), 50, 30, id="after-before"),
]
"""A range, the limit of the scan, and how many rows it holds."""


def _documents() -> Changes:
    """200 groups of 30 keys in one collection, and as many in another."""
    changes = Changes()
    for collection in ("c", "other"):
        for group in range(200):
            for n in range(30):
                changes.put(collection, f"g-{group:04d}/{n:04d}", {"n": n})
    return changes


@pytest.mark.parametrize(("keys", "limit", "rows"), RANGES)
async def test_sqlite_reads_a_range_of_the_primary_key(tmp_path: Path, keys: KeyRange,
                                                      limit: int | None, rows: int) -> None:
    db = await SqliteDatabase(str(tmp_path / "docs.db")).open()
    try:
        await SqliteDocumentStore(db).commit(_documents())
        sql, values = SqliteDocumentStore.scan_query("c", keys, limit)
        plan = await db.run(lambda c: c.execute(f"EXPLAIN QUERY PLAN {sql}", values).fetchall())
        assert len(await db.run(lambda c: c.execute(sql, values).fetchall())) == rows
    finally:
        await db.close()
    [(*_, detail)] = plan
    # (a filter on the key, such as substr(key, 1, n) = prefix, shows as (collection=?) only)
    assert detail == "SEARCH documents USING PRIMARY KEY (collection=? AND key>? AND key<?)"


@pytest.mark.postgres
@pytest.mark.parametrize(("keys", "limit", "rows"), RANGES)
async def test_postgres_reads_a_range_of_the_primary_key(postgres_url: str, keys: KeyRange,
                                                        limit: int | None, rows: int) -> None:
    schema = f"t{uuid4().hex[:12]}"
    async with postgres_stores(postgres_url, schema) as stores:
        documents = stores.documents
        assert isinstance(documents, PostgresDocumentStore)
        await documents.commit(_documents())
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'ANALYZE "{schema}".documents')
            sql, values = documents.scan_query("c", keys, limit)
            [plan] = json.loads(await conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *values))
        finally:
            await conn.close()
    node = plan["Plan"]
    while node["Node Type"] == "Limit":
        [node] = node["Plans"]
    assert node["Node Type"] in ("Index Scan", "Index Only Scan"), node
    assert "key >" in node["Index Cond"] and "key <" in node["Index Cond"], node
    # every row read is a row returned: none is read and then filtered out
    assert node.get("Rows Removed by Filter", 0) == 0
    assert node["Actual Rows"] == rows
