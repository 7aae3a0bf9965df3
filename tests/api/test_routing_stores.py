"""The routing repositories on SQLite and on the real Postgres server: the decision cache (keys,
expiry, pruning, upsert) and the review queue (enqueue, listing, one resolution wins a race)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.db.connection import Database
from app.db.registry import Databases
from app.routing.store import IntentCacheStore, ReviewItem, ReviewStore
from tests.conftest import Backend


@pytest.fixture
async def database(backend: Backend, tmp_path: Path) -> AsyncIterator[Database]:
    databases = Databases(database_url=backend.settings.get("database_url", ""))
    yield await databases.get(tmp_path / "routing.db")
    await databases.close()


async def test_cache_entries_are_keyed_by_policy_and_signature_and_expire(database: Database) -> None:
    cache = IntentCacheStore(database, ttl_seconds=600)
    await cache.migrate()
    await cache.migrate()  # idempotent
    await cache.put("p1", "s1", {"route": "tool:echo", "confidence": 0.9})
    assert await cache.get("p1", "s1") == {"route": "tool:echo", "confidence": 0.9}
    assert await cache.get("p2", "s1") is None and await cache.get("p1", "s2") is None
    await cache.put("p1", "s1", {"route": "provider", "confidence": 1.0})  # upsert
    assert (await cache.get("p1", "s1") or {})["route"] == "provider"
    assert await cache.count() == 1

    short = IntentCacheStore(database, ttl_seconds=0.2)
    await short.put("p1", "short", {"route": "provider", "confidence": 1.0})
    assert await short.get("p1", "short") is not None
    await asyncio.sleep(0.3)
    assert await short.get("p1", "short") is None  # expired entries are not used ...
    assert await cache.count() == 2
    assert await cache.prune_expired() == 1  # ... and are deleted
    assert await cache.count() == 1


def item(item_id: str, created_at: str) -> ReviewItem:
    return ReviewItem(
        id=item_id,
        created_at=created_at,
        status="pending",
        reason="hitl_low_confidence",
        principal="alice",
        trace_id="t-" + item_id,
        policy_hash="p",
        signature="s",
        proposed_route="tool:echo",
        proposal={"route": "tool:echo", "confidence": 0.6},
        message="repeat this",
    )


async def test_the_review_queue_lists_by_status_in_order(database: Database) -> None:
    store = ReviewStore(database)
    await store.migrate()
    await store.migrate()
    for n in (2, 1, 3):
        await store.enqueue(item(f"r{n}", f"2026-01-01T00:00:0{n}+00:00"))
    assert [i.id for i in await store.list(status="pending", limit=10)] == ["r1", "r2", "r3"]
    assert [i.id for i in await store.list(status="pending", limit=2)] == ["r1", "r2"]
    assert await store.resolve("r2", status="rejected", resolution="reject", resolved_by="bob", note=None)
    assert [i.id for i in await store.list(status="pending", limit=10)] == ["r1", "r3"]
    assert [i.id for i in await store.list(status="rejected", limit=10)] == ["r2"]
    assert len(await store.list(status=None, limit=10)) == 3
    got = await store.get("r2")
    assert got is not None and got.resolved_by == "bob" and got.proposal == {"route": "tool:echo", "confidence": 0.6}
    assert await store.get("missing") is None


async def test_only_one_of_two_racing_resolutions_wins(database: Database) -> None:
    store = ReviewStore(database)
    await store.migrate()
    await store.enqueue(item("race", "2026-01-01T00:00:00+00:00"))
    results = await asyncio.gather(
        *(
            store.resolve("race", status="resolved", resolution=f"tool:t{n}", resolved_by=f"a{n}", note=None)
            for n in range(8)
        )
    )
    assert sorted(results) == [False] * 7 + [True]
    final = await store.get("race")
    assert final is not None and final.status == "resolved"
    assert final.resolution == f"tool:t{results.index(True)}"
    assert not await store.resolve("race", status="rejected", resolution="reject", resolved_by="x", note=None)
