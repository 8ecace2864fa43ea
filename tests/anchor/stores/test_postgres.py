"""PostgresStore against the real server of ``scripts/services`` (a fresh database per test)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import trio

from anchor.stores import MigrationError, PostgresStore, StoreError
from anchor.stores.postgres import MIGRATIONS_DIR, hash_secret, load_migrations
from tests.anchor.stores.scan import columns_containing

NOW_MS = 1_800_000_000_000


async def test_migrations_are_applied_once_and_recorded(pg_dsn: str) -> None:
    files = load_migrations()
    assert [m.version for m in files] == list(range(1, len(files) + 1))
    async with PostgresStore(pg_dsn) as store:
        assert await store.applied_migrations() == [(m.version, m.name) for m in files]
    # A second start (another process, a restart) applies nothing again and keeps the data.
    async with PostgresStore(pg_dsn) as store:
        await store.audit("test", "first", "", {})
    async with PostgresStore(pg_dsn) as store:
        assert await store.applied_migrations() == [(m.version, m.name) for m in files]
        assert [e.action for e in await store.recent_audit()] == ["first"]
    with psycopg.connect(pg_dsn) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"profiles", "sessions", "agent_states", "mailbox", "audit_log", "api_keys", "schema_migrations"} <= tables


async def test_concurrent_starts_apply_migrations_once(pg_dsn: str) -> None:
    stores = [PostgresStore(pg_dsn) for _ in range(4)]
    async with trio.open_nursery() as nursery:
        for s in stores:
            nursery.start_soon(s.start)
    assert len(await stores[0].applied_migrations()) == len(load_migrations())
    for s in stores:
        await s.aclose()


async def test_a_new_migration_is_applied_on_next_start(pg_dsn: str, tmp_path: Path) -> None:
    for src in MIGRATIONS_DIR.glob("*.sql"):
        (tmp_path / src.name).write_text(src.read_text())
    async with PostgresStore(pg_dsn, migrations_dir=tmp_path) as store:
        before = await store.applied_migrations()
    n = len(before) + 1
    (tmp_path / f"{n:04d}_extra_table.sql").write_text("CREATE TABLE extra (x integer);")
    async with PostgresStore(pg_dsn, migrations_dir=tmp_path) as store:
        assert await store.applied_migrations() == [*before, (n, "extra_table")]


@pytest.mark.parametrize(
    "names",
    [
        ["0001_a.sql", "0003_c.sql"],  # gap
        ["0002_b.sql"],  # does not start at 1
        ["0001_a.sql", "0001_b.sql"],  # duplicate number
        ["0001_a.sql", "2_b.sql"],  # bad name
        ["0001_A.sql"],  # bad name
    ],
)
def test_migration_files_must_be_numbered_without_gaps(tmp_path: Path, names: list[str]) -> None:
    for name in names:
        (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError):
        load_migrations(tmp_path)


async def test_a_failing_migration_is_rolled_back_and_reported(pg_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ok_one (x integer);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (x integer); THIS IS NOT SQL;")
    store = PostgresStore(pg_dsn, migrations_dir=tmp_path)
    with pytest.raises(MigrationError, match="0002_bad"):
        await store.start()
    await store.aclose()
    with psycopg.connect(pg_dsn) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
        half = conn.execute("SELECT to_regclass('half')").fetchone()
    assert versions == [1]
    assert half == (None,)


async def test_api_keys_are_stored_hashed_never_in_plaintext(pg_dsn: str) -> None:
    async with PostgresStore(pg_dsn) as store:
        key, secret = await store.create_api_key("ci bot", "node", {"messages:send", "mailbox:read"})
        assert key.role == "node" and key.scopes == {"messages:send", "mailbox:read"} and not key.revoked
        assert secret.startswith("avk_") and len(secret) >= 40
        assert await store.verify_api_key(secret) == key
        assert await store.verify_api_key(secret + "x") is None
        assert await store.verify_api_key("avk_" + "A" * 43) is None
        assert await store.verify_api_key("") is None
        with pytest.raises(StoreError, match="role"):
            await store.create_api_key("x", "root", set())
    with psycopg.connect(pg_dsn) as conn:
        # Every text/bytea/json column of every table: neither the secret nor its random part appears.
        assert columns_containing(conn, secret) == []
        assert columns_containing(conn, secret.removeprefix("avk_")) == []
        stored = conn.execute("SELECT secret_sha256 FROM api_keys WHERE key_id = %s", (key.key_id,)).fetchone()
    assert stored is not None and bytes(stored[0]) == hash_secret(secret)


async def test_revoke_and_list_api_keys(pg_dsn: str) -> None:
    async with PostgresStore(pg_dsn) as store:
        a, secret_a = await store.create_api_key("a", "admin", {"keys:admin"})
        b, _ = await store.create_api_key("b", "user", set())
        assert [k.key_id for k in await store.list_api_keys()] == [a.key_id, b.key_id]
        assert await store.key_active(a.key_id)
        assert await store.revoke_api_key(a.key_id) is True
        assert await store.revoke_api_key(a.key_id) is False  # already revoked
        assert await store.revoke_api_key("k_nobody") is False
        assert not await store.key_active(a.key_id)
        verified = await store.verify_api_key(secret_a)
        assert verified is not None and verified.revoked
        assert [(k.key_id, k.revoked) for k in await store.list_api_keys()] == [(a.key_id, True), (b.key_id, False)]


async def test_audit_log(pg_dsn: str) -> None:
    async with PostgresStore(pg_dsn) as store:
        first = await store.audit("key:k1", "key.create", "k2", {"role": "user"})
        second = await store.audit("key:k1", "message.send", "peer:ab", {"bytes": 5})
        assert second > first
        entries = await store.recent_audit()
        assert [(e.actor, e.action, e.target, e.detail) for e in entries] == [
            ("key:k1", "message.send", "peer:ab", {"bytes": 5}),
            ("key:k1", "key.create", "k2", {"role": "user"}),
        ]
        assert [e.id for e in await store.recent_audit(action="key.create")] == [first]
        with pytest.raises(StoreError, match="actor"):
            await store.audit("x" * 2000, "a")
        batch = [("key:k2", "message.send", f"peer:{i:02x}", {"n": i}) for i in range(50)]
        assert await store.audit_many(batch) == 50
        assert await store.audit_many([]) == 0
        newest = await store.recent_audit(limit=50)
        assert [(e.actor, e.target, e.detail) for e in reversed(newest)] == [(a, t, d) for a, _, t, d in batch]
        with pytest.raises(StoreError, match="target"):
            await store.audit_many([("a", "b", "t" * 2000, {})])


async def test_mailbox_deposit_dedupe_list_delete_expire(pg_dsn: str) -> None:
    alice, bob = b"\x01" * 8, b"\x02" * 8
    async with PostgresStore(pg_dsn) as store:
        id1, new1 = await store.mailbox_deposit(alice, b"m1", b"sealed-1", NOW_MS + 60_000, NOW_MS)
        again, new_again = await store.mailbox_deposit(alice, b"m1", b"sealed-1", NOW_MS + 60_000, NOW_MS + 5)
        assert new1 and not new_again and again == id1
        id2, _ = await store.mailbox_deposit(alice, b"m2", b"sealed-2", NOW_MS + 1_000, NOW_MS)
        id3, _ = await store.mailbox_deposit(bob, b"m1", b"sealed-3", NOW_MS + 60_000, NOW_MS)
        assert await store.mailbox_count(alice, NOW_MS) == 2
        assert await store.mailbox_count(None, NOW_MS) == 3
        listed = await store.mailbox_list(alice, NOW_MS, limit=10)
        assert [(e.id, e.envelope, e.dedupe_id) for e in listed] == [
            (id1, b"sealed-1", b"m1"),
            (id2, b"sealed-2", b"m2"),
        ]
        assert [e.id for e in await store.mailbox_list(alice, NOW_MS, limit=1)] == [id1]
        # Expired envelopes are not listed, and expire() deletes them.
        assert [e.id for e in await store.mailbox_list(alice, NOW_MS + 2_000, limit=10)] == [id1]
        assert await store.mailbox_expire(NOW_MS + 2_000) == 1
        # Only the recipient's own envelopes are deleted.
        assert await store.mailbox_delete(alice, [id1, id3]) == 1
        assert await store.mailbox_delete(alice, []) == 0
        assert await store.mailbox_count(alice, NOW_MS) == 0
        assert [e.id for e in await store.mailbox_list(bob, NOW_MS, 10)] == [id3]


async def test_sessions_profiles_and_agent_states(pg_dsn: str) -> None:
    async with PostgresStore(pg_dsn) as store:
        await store.put_session("s1", "key:k1", {"ip": "127.0.0.1"}, NOW_MS + 1000)
        s = await store.get_session("s1", NOW_MS)
        assert s is not None and s.subject == "key:k1" and s.data == {"ip": "127.0.0.1"}
        assert await store.get_session("s1", NOW_MS + 1000) is None  # expired
        assert await store.delete_session("s1") and not await store.delete_session("s1")

        await store.put_profile("peer:ab", "Alice", {"lang": "en"})
        await store.put_profile("peer:ab", "Alice B", {"lang": "fr"})
        assert await store.get_profile("peer:ab") == ("Alice B", {"lang": "fr"})
        assert await store.get_profile("peer:zz") is None

        assert await store.save_agent_state("king", "plan", {"step": 1}, expected_version=0) == 1
        assert await store.save_agent_state("king", "plan", {"step": 9}, expected_version=0) is None
        assert await store.save_agent_state("king", "plan", {"step": 2}, expected_version=1) == 2
        assert await store.save_agent_state("king", "plan", {"step": 3}, expected_version=1) is None  # stale
        assert await store.save_agent_state("king", "plan", {"step": 4}) == 3
        state = await store.load_agent_state("king", "plan")
        assert state is not None and (state.state, state.version) == ({"step": 4}, 3)
        assert await store.load_agent_state("king", "other") is None


async def test_server_errors_become_store_errors(pg_dsn: str) -> None:
    async with PostgresStore(pg_dsn) as store:
        with pytest.raises(StoreError, match="LIMIT must not be negative"):
            await store.mailbox_list(b"\x01" * 8, NOW_MS, limit=-1)
        assert store.down_reason is None
        assert await store.mailbox_list(b"\x01" * 8, NOW_MS, limit=1) == []


async def test_a_database_migrated_differently_is_refused(pg_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE one (x integer);")
    (tmp_path / "0002_second.sql").write_text("CREATE TABLE two (x integer);")
    async with PostgresStore(pg_dsn, migrations_dir=tmp_path) as store:
        assert await store.applied_migrations() == [(1, "first"), (2, "second")]
    # Older code (knows only 0001) against the newer database.
    (tmp_path / "0002_second.sql").unlink()
    store = PostgresStore(pg_dsn, migrations_dir=tmp_path)
    with pytest.raises(MigrationError, match="0002_second, which this code does not know"):
        await store.start()
    await store.aclose()
    # A renamed migration.
    (tmp_path / "0001_first.sql").rename(tmp_path / "0001_renamed.sql")
    (tmp_path / "0002_second.sql").write_text("CREATE TABLE two (x integer);")
    store = PostgresStore(pg_dsn, migrations_dir=tmp_path)
    with pytest.raises(MigrationError, match="never be renamed"):
        await store.start()
    await store.aclose()
