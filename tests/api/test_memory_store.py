"""The memory repository on SQLite and on the real Postgres server: the same behaviour on both
(capture, dedupe, scopes, expiry, purge, full-text recall ranking, hostile query text)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.db.registry import Databases
from app.memory.gate import content_hash
from app.memory.store import MemoryStore, owner_hash, recall_terms
from tests.conftest import Backend

ALICE, BOB = owner_hash("alice"), owner_hash("bob")


@pytest.fixture
async def store(backend: Backend, tmp_path: Path) -> AsyncIterator[MemoryStore]:
    databases = Databases(database_url=backend.settings.get("database_url", ""))
    memory = MemoryStore(await databases.get(tmp_path / "memory.db"), dedupe_window_seconds=86_400)
    await memory.migrate()
    await memory.migrate()  # idempotent
    yield memory
    await databases.close()


async def put(
    store: MemoryStore, content: str, owner: str = ALICE, conversation: str | None = None, ttl: int = 60
) -> str:
    result = await store.capture(
        owner=owner,
        conversation_id=conversation,
        content=content,
        digest=content_hash(content),
        ttl_minutes=ttl,
        source="test",
    )
    return result.id


async def test_capture_dedupes_within_owner_and_scope(store: MemoryStore) -> None:
    first = await store.capture(
        owner=ALICE, conversation_id=None, content="x is 1", digest="h", ttl_minutes=5, source="t"
    )
    again = await store.capture(
        owner=ALICE, conversation_id=None, content="x is 1", digest="h", ttl_minutes=5, source="t"
    )
    other_scope = await store.capture(
        owner=ALICE, conversation_id="c", content="x is 1", digest="h", ttl_minutes=5, source="t"
    )
    other_owner = await store.capture(
        owner=BOB, conversation_id=None, content="x is 1", digest="h", ttl_minutes=5, source="t"
    )
    assert not first.deduped and again.deduped and again.id == first.id
    assert not other_scope.deduped and not other_owner.deduped
    assert len({first.id, other_scope.id, other_owner.id}) == 3
    entry = await store.get(ALICE, first.id)
    assert entry is not None and entry.passes == 2
    assert await store.get(BOB, first.id) is None


async def test_recall_ranks_by_relevance_with_stemming_and_respects_scope(store: MemoryStore) -> None:
    for n in range(20):  # a realistic corpus: rare words weigh more than common ones
        await put(store, f"unrelated note number {n} about cooking and music")
    deploy = await put(store, "We deploy to production on Fridays; deployments need two reviewers")
    colour = await put(store, "The favourite colour of the team is green")
    mixed = await put(store, "Friday lunch is pizza")
    await put(store, "Deployments of the other user", owner=BOB)
    private = await put(store, "Deployment freeze in this conversation", conversation="c1")
    found = await store.recall(ALICE, conversation_id=None, query="What about deployments?", limit=5)
    assert [m.id for m in found] == [deploy]
    found = await store.recall(ALICE, conversation_id="c1", query="deployments on friday", limit=5)
    order = [m.id for m in found]
    assert set(order) == {deploy, private, mixed}
    assert order.index(deploy) < order.index(mixed)  # both words beat one
    assert colour not in [m.id for m in found]
    assert await store.recall(ALICE, conversation_id=None, query="the and of", limit=5) == []


@pytest.mark.parametrize(
    "query",
    ['"unbalanced', "NEAR(a b)", "col:value", "a* OR b*", "x' OR 1=1 --", "!!! & | :: ()", "naïve café", "\x00\x01"],
)
async def test_hostile_query_text_is_just_words(store: MemoryStore, query: str) -> None:
    await put(store, "naive cafe value reviewers")
    found = await store.recall(ALICE, conversation_id=None, query=query, limit=5)
    assert all(m.content == "naive cafe value reviewers" for m in found)


async def test_expired_entries_are_invisible_then_purged(store: MemoryStore, backend: Backend) -> None:
    keep = await put(store, "this one stays")
    gone = await put(store, "this one expires soon")
    await store.db.execute("UPDATE memory_candidates SET expires_ts = 1 WHERE id = $1", gone)
    assert await store.get(ALICE, gone) is None
    assert [m.id for m in (await store.page(ALICE, limit=10))[0]] == [keep]
    assert await store.recall(ALICE, conversation_id=None, query="expires soon", limit=5) == []
    again = await put(store, "this one expires soon")  # not a dedupe of an expired entry
    assert again != gone
    assert await store.purge_expired() == 1
    assert await store.count() == 2 and not await store.exists(ALICE, gone)


async def test_concurrent_duplicates_make_one_entry(store: MemoryStore) -> None:
    ids = await asyncio.gather(*(put(store, "same thing said at once") for _ in range(8)))
    assert len(set(ids)) == 1
    entry = await store.get(ALICE, ids[0])
    assert entry is not None and entry.passes == 8


def test_recall_terms() -> None:
    assert recall_terms("What did I ask you to remember about DEPLOYMENTS, deployments?") == ["deployments"]
    assert len(recall_terms(" ".join(f"word{n}" for n in range(100)))) == 16
