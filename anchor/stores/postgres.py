"""The anchor's relational store: PostgreSQL through psycopg 3 and a psycopg_pool connection pool.

At :meth:`PostgresStore.start` (and again before the first call that reaches the server, if it was down at start)
the numbered migrations in ``anchor/stores/migrations/NNNN_name.sql`` are applied in order, each in its own
transaction together with its row in ``schema_migrations``; concurrent starters serialise on an advisory lock,
so applying is idempotent and safe from several processes.

Every public method is ``async``: the blocking psycopg call runs in a worker thread through a bounded
:class:`trio.CapacityLimiter` (one thread per pooled connection). A server that is down or too slow raises
:class:`StoreUnavailable` (after at most ``timeout_s``) and logs one line; the pool reconnects by itself, so
the next call after the server is back succeeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import psycopg_pool
import trio
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from anchor.stores._runner import BlockingRunner
from anchor.stores.errors import MigrationError, StoreError, StoreUnavailable

T = TypeVar("T")
log = logging.getLogger("village.anchor.stores")
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_MAILBOX_LOCK_CLASS = 0x4D42  # pg_advisory_xact_lock(class, recipient prefix): one depositor per recipient at a time
_MIGRATION_LOCK = 0x41495649  # pg_advisory_xact_lock key ("AIVI"): one migrator at a time per database
ROLES = frozenset({"admin", "user", "node"})
API_KEY_PREFIX = "avk_"
API_KEY_SECRET_BYTES = 32  # 256 bits: a fast hash (SHA-256) is then as good as a slow one against guessing
MAX_TEXT = 1024  # names, actors, actions, targets: longer is a caller bug, refused with StoreError


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    name: str
    role: str
    scopes: frozenset[str]
    created_at_ms: int
    revoked: bool


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at_ms: int
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MailboxEnvelope:
    id: int
    recipient: bytes
    dedupe_id: bytes
    envelope: bytes
    expires_at_ms: int
    deposited_at_ms: int


@dataclass(frozen=True, slots=True)
class MailboxHeld:
    """One unexpired envelope of a recipient, as a deposit's quota decision sees it."""

    id: int
    depositor: bytes
    size_bytes: int
    deposited_at_ms: int


@dataclass(frozen=True, slots=True)
class AgentState:
    agent_id: str
    key: str
    state: dict[str, Any]
    version: int


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    subject: str
    data: dict[str, Any]
    expires_at_ms: int


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in version order; MigrationError unless they are named NNNN_name.sql, 1..N, no gap."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        m = _MIGRATION_NAME.match(path.name)
        if m is None:
            raise MigrationError(f"{path}: migration files are named NNNN_lowercase_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(
            f"{directory}: migrations must be numbered 1..N without gaps or duplicates, got {versions}"
        )
    return found


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


# SQLSTATE classes of a refusal for what a row holds, not for the server's state: 22 data exception, 23 integrity
# constraint violation, 54 program limit exceeded (an index row too big: psycopg calls it an OperationalError).
CONTENT_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})


def refused_for_content(exc: psycopg.Error) -> bool:
    """Whether PostgreSQL refused a statement for the values it holds (retrying the same values fails again)."""
    return (exc.sqlstate or "")[:2] in CONTENT_SQLSTATE_CLASSES


class _RefusedRow(Exception):
    """Carries a psycopg error PostgreSQL raised for a row's content past the runner (which would call an
    OperationalError such as ProgramLimitExceeded an outage)."""

    def __init__(self, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.error = error


def _check_text(what: str, value: str) -> None:
    if len(value) > MAX_TEXT:
        raise StoreError(f"{what}: at most {MAX_TEXT} characters")


_KEY_COLUMNS = "key_id, name, role, scopes, (extract(epoch FROM created_at) * 1000)::bigint, revoked_at IS NOT NULL"


def _api_key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], frozenset(row[3]), int(row[4]), bool(row[5]))


class PostgresStore:
    """Profiles, sessions, agent states, the offline-peer mailbox, the audit log and hashed API keys."""

    def __init__(
        self,
        dsn: str,
        *,
        timeout_s: float = 5.0,
        max_connections: int = 8,
        migrations_dir: Path = MIGRATIONS_DIR,
    ) -> None:
        self._migrations = load_migrations(migrations_dir)
        self._timeout_s = timeout_s
        self._dsn = dsn
        self._max_connections = max_connections
        self._pool = self._new_pool()
        self._reopen_lock = trio.Lock()
        self._runner = BlockingRunner(
            "postgres", max_connections, (psycopg.OperationalError,), 2 * timeout_s, errors=(psycopg.Error,)
        )
        # The pool logs a warning per failed reconnection attempt; our runner logs the outage once instead.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        self._migrated = False
        self._opened = False
        self._system_identifier: str | None = None

    def _new_pool(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[TupleRow]]:
        return psycopg_pool.ConnectionPool(
            self._dsn,
            min_size=1,
            max_size=self._max_connections,
            open=False,
            timeout=self._timeout_s,
            # A connection that died with the server is found out before use and replaced.
            check=psycopg_pool.ConnectionPool.check_connection,
            kwargs={"connect_timeout": max(1, int(self._timeout_s)), "application_name": "aivillage-anchor"},
            reconnect_timeout=60.0,
            name="anchor-postgres",
        )

    # ------------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Open the pool and apply pending migrations. StoreUnavailable if the server is down (the store still
        works later: migrations are then applied before the first call that reaches the server)."""
        await self._ensure_migrated()

    async def aclose(self) -> None:
        if self._opened:
            self._opened = False
            await self._runner.run(lambda: self._pool.close(timeout=self._timeout_s))

    async def __aenter__(self) -> PostgresStore:
        # Down at start: usable later; each call reports the outage until the server is back.
        with contextlib.suppress(StoreUnavailable):
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _ensure_migrated(self) -> None:
        if self._runner.down_reason is not None and self._opened:
            await self._reopen_if_back()
        if not self._opened:
            # wait=False: does not block on the server; connections are made (and remade) by the pool.
            await self._runner.run(lambda: self._pool.open(wait=False))
            self._opened = True
        if not self._migrated:
            await self._runner.run(self._apply_migrations)
            self._migrated = True

    async def _reopen_if_back(self) -> None:
        """After an outage: if the server answers a direct connection again, replace the pool. The old one is
        in its reconnection backoff (up to many seconds); a new pool connects at once, so the first call after
        the server is back succeeds. Still down: StoreUnavailable, quickly (connection refused)."""
        async with self._reopen_lock:
            if self._runner.down_reason is None:
                return  # another task did it

            def probe_and_swap() -> None:
                psycopg.connect(self._dsn, connect_timeout=max(1, int(self._timeout_s))).close()
                old, self._pool = self._pool, self._new_pool()
                self._pool.open(wait=False)
                old.close(timeout=0)

            await self._runner.run(probe_and_swap)

    def _apply_migrations(self) -> list[int]:
        applied: list[int] = []
        with self._pool.connection() as conn:
            for migration in self._migrations:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                        "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                    )
                    rows = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
                    done: dict[int, str] = {int(r[0]): str(r[1]) for r in rows}
                    self._check_history(done)
                    if migration.version in done:
                        continue
                    try:
                        conn.execute(migration.sql.encode())
                    except psycopg.OperationalError:
                        raise
                    except psycopg.Error as exc:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                        ) from exc
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                    applied.append(migration.version)
        return applied

    def _check_history(self, done: dict[int, str]) -> None:
        """The database's applied migrations must be a prefix of ours, by number and name."""
        known = {m.version: m.name for m in self._migrations}
        for version, name in sorted(done.items()):
            if version not in known:
                raise MigrationError(
                    f"the database has migration {version:04d}_{name}, which this code does not know "
                    f"(it knows 1..{len(known)}): it was migrated by a newer version"
                )
            if known[version] != name:
                raise MigrationError(
                    f"migration {version:04d} is {name!r} in the database but {known[version]!r} here: "
                    "applied migrations must never be renamed or renumbered"
                )

    async def _call(self, fn: Callable[[psycopg.Connection[TupleRow]], T]) -> T:
        await self._ensure_migrated()

        def work() -> T:
            with self._pool.connection() as conn:
                return fn(conn)

        return await self._runner.run(work)

    async def ping(self) -> None:
        """Raises StoreUnavailable unless the server answers."""
        await self._call(lambda conn: conn.execute("SELECT 1").fetchone())

    async def applied_migrations(self) -> list[tuple[int, str]]:
        rows = await self._call(
            lambda conn: conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
        )
        return [(int(r[0]), str(r[1])) for r in rows]

    @property
    def database(self) -> str:
        """The database's name (from the DSN)."""
        return str(psycopg.conninfo.conninfo_to_dict(self._dsn).get("dbname") or "")

    async def system_identifier(self) -> str:
        """The server's system identifier (``pg_control_system()``: made at ``initdb``, the same on its physical
        replicas, different on any other server), read once; "unknown" if the server will not say.
        StoreUnavailable while the server is down."""
        if self._system_identifier is None:

            def work(conn: psycopg.Connection[TupleRow]) -> str:
                row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
                return str(row[0]) if row else "unknown"

            try:
                found = await self._call(work)
            except StoreUnavailable:
                raise
            except StoreError as exc:  # a hosted server may refuse the function
                log.warning("PostgreSQL does not give its system identifier (%s): audit stream named by database", exc)
                found = "unknown"
            self._system_identifier = found
        return self._system_identifier

    @property
    def down_reason(self) -> str | None:
        """Why the last call failed, or None if it reached the server."""
        return self._runner.down_reason

    # -------------------------------------------------------------------------------------------- api keys

    async def create_api_key(self, name: str, role: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
        """A new key and its secret. The secret is returned once and never stored: only its SHA-256 is."""
        if isinstance(scopes, str):
            raise StoreError("scopes: expected a collection of scope names, not one string")
        if role not in ROLES:
            raise StoreError(f"role: expected one of {sorted(ROLES)}, got {role!r}")
        _check_text("name", name)
        key_id = "k_" + secrets.token_hex(8)
        secret = API_KEY_PREFIX + secrets.token_urlsafe(API_KEY_SECRET_BYTES)
        scope_list = sorted(set(scopes))

        def work(conn: psycopg.Connection[TupleRow]) -> ApiKey:
            row = conn.execute(
                f"INSERT INTO api_keys (key_id, name, role, scopes, secret_sha256) VALUES (%s, %s, %s, %s, %s) "
                f"RETURNING {_KEY_COLUMNS}",
                (key_id, name, role, scope_list, hash_secret(secret)),
            ).fetchone()
            assert row is not None
            return _api_key(row)

        return await self._call(work), secret

    async def verify_api_key(self, secret: str) -> ApiKey | None:
        """The key this secret belongs to (revoked or not: check ``revoked``), None if it is nobody's."""
        if not secret.startswith(API_KEY_PREFIX) or len(secret) > 200:
            return None
        digest = hash_secret(secret)
        row = await self._call(
            lambda conn: conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE secret_sha256 = %s", (digest,)
            ).fetchone()
        )
        return None if row is None else _api_key(row)

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        row = await self._call(
            lambda conn: conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = %s", (key_id,)).fetchone()
        )
        return None if row is None else _api_key(row)

    async def key_active(self, key_id: str) -> bool:
        key = await self.get_api_key(key_id)
        return key is not None and not key.revoked

    async def list_api_keys(self) -> list[ApiKey]:
        rows = await self._call(
            lambda conn: conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, key_id").fetchall()
        )
        return [_api_key(r) for r in rows]

    async def revoke_api_key(self, key_id: str) -> bool:
        """True if a live key was revoked now; False if unknown or already revoked."""
        row = await self._call(
            lambda conn: conn.execute(
                "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL RETURNING key_id",
                (key_id,),
            ).fetchone()
        )
        return row is not None

    # ------------------------------------------------------------------------------------------- audit log

    async def audit(self, actor: str, action: str, target: str = "", detail: Mapping[str, Any] | None = None) -> int:
        """Append one row to the audit log; its ID."""
        for what, value in (("actor", actor), ("action", action), ("target", target)):
            _check_text(what, value)
        payload = Jsonb(dict(detail or {}))
        row = await self._call(
            lambda conn: conn.execute(
                "INSERT INTO audit_log (actor, action, target, detail) VALUES (%s, %s, %s, %s) RETURNING id",
                (actor, action, target, payload),
            ).fetchone()
        )
        assert row is not None
        return int(row[0])

    async def audit_many(self, entries: Sequence[tuple[str, str, str, Mapping[str, Any]]]) -> int:
        """Append several (actor, action, target, detail) rows in one pipelined transaction (a caller
        that buffers its audit rows briefly pays one commit for many); how many were written."""
        for actor, action, target, _ in entries:
            for what, value in (("actor", actor), ("action", action), ("target", target)):
                _check_text(what, value)
        rows = [(actor, action, target, Jsonb(dict(detail))) for actor, action, target, detail in entries]
        if not rows:
            return 0

        def work(conn: psycopg.Connection[TupleRow]) -> int:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany("INSERT INTO audit_log (actor, action, target, detail) VALUES (%s, %s, %s, %s)", rows)
            return len(rows)

        return await self._call(work)

    async def audit_drained(self, entries: Sequence[tuple[str, int, str, str, str, str]]) -> int:
        """Insert audit records drained from Redis: (event_id, at_ms, actor, action, target, detail as JSON) each,
        in one transaction; a record whose event ID is there already is skipped (at-least-once delivery made
        idempotent). How many were new."""
        rows: list[tuple[str, float, str, str, str, str]] = []
        for event_id, at_ms, actor, action, target, detail in entries:
            for what, value in (("event_id", event_id), ("actor", actor), ("action", action), ("target", target)):
                _check_text(what, value)
            rows.append((event_id, at_ms / 1000.0, actor, action, target, detail))
        if not rows:
            return 0

        def work(conn: psycopg.Connection[TupleRow]) -> int:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute(
                        "INSERT INTO audit_log (event_id, at, actor, action, target, detail) "
                        "SELECT e, to_timestamp(t), a, ac, tg, d::jsonb FROM unnest(%s::text[], %s::float8[], "
                        "%s::text[], %s::text[], %s::text[], %s::text[]) AS u(e, t, a, ac, tg, d) "
                        "ON CONFLICT (event_id) WHERE event_id IS NOT NULL DO NOTHING",
                        [list(col) for col in zip(*rows, strict=True)],
                    )
                    return cur.rowcount
            except psycopg.Error as exc:
                if refused_for_content(exc):
                    raise _RefusedRow(exc) from exc
                raise

        try:
            return await self._call(work)
        except _RefusedRow as refused:  # the server answered: a StoreError (the drain retries row by row)
            self._runner.mark_up()
            raise StoreError(f"postgres: {type(refused.error).__name__}: {refused}"[:300]) from refused.error

    async def recent_audit(self, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        """The newest entries first (by when they were recorded; optionally only one action). Records drained
        from Redis keep the time the gateway recorded them, so they sort where they happened."""
        sql = (
            "SELECT id, (extract(epoch FROM at) * 1000)::bigint, actor, action, target, detail FROM audit_log "
            + ("WHERE action = %s " if action is not None else "")
            + "ORDER BY at DESC, id DESC LIMIT %s"
        )
        params: tuple[Any, ...] = (action, limit) if action is not None else (limit,)
        rows = await self._call(lambda conn: conn.execute(sql, params).fetchall())
        return [AuditEntry(int(r[0]), int(r[1]), r[2], r[3], r[4], dict(r[5])) for r in rows]

    # --------------------------------------------------------------------------------------------- mailbox

    async def mailbox_deposit(
        self,
        recipient: bytes,
        dedupe_id: bytes,
        envelope: bytes,
        expires_at_ms: int,
        now_ms: int,
        *,
        depositor: bytes = b"",
        decide: Callable[[list[MailboxHeld]], Sequence[int]] | None = None,
    ) -> tuple[int, bool]:
        """Store a sealed envelope for ``recipient``; (its row ID, True if new). The same (recipient, dedupe_id)
        deposited again returns the first row's ID and False. ``decide`` (the quota) is given the recipient's
        unexpired envelopes and returns the IDs to delete to make room, or raises to refuse the deposit (nothing
        changes then). Decision, deletions and insert are one transaction under a transaction-scoped advisory lock
        on the recipient, so concurrent deposits cannot overshoot a quota. ``decide`` runs in the store's worker
        thread: it must not block."""

        def work(conn: psycopg.Connection[TupleRow]) -> tuple[int, bool]:
            # Two-int advisory keys live apart from the migrator's one-bigint key.
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)",
                (_MAILBOX_LOCK_CLASS, int.from_bytes(recipient[:4].ljust(4, b"\0"), "big", signed=True)),
            )
            old = conn.execute(
                "SELECT id FROM mailbox WHERE recipient = %s AND dedupe_id = %s", (recipient, dedupe_id)
            ).fetchone()
            if old is not None:
                return int(old[0]), False
            if decide is not None:
                rows = conn.execute(
                    "SELECT id, depositor, octet_length(envelope), deposited_at_ms FROM mailbox "
                    "WHERE recipient = %s AND expires_at_ms > %s",
                    (recipient, now_ms),
                ).fetchall()
                evict = list(decide([MailboxHeld(int(r[0]), bytes(r[1]), int(r[2]), int(r[3])) for r in rows]))
                if evict:
                    conn.execute("DELETE FROM mailbox WHERE recipient = %s AND id = ANY(%s)", (recipient, evict))
            row = conn.execute(
                "INSERT INTO mailbox (recipient, dedupe_id, envelope, expires_at_ms, deposited_at_ms, depositor) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (recipient, dedupe_id, envelope, expires_at_ms, now_ms, depositor),
            ).fetchone()
            assert row is not None  # INSERT ... RETURNING always returns the row
            return int(row[0]), True

        return await self._call(work)

    async def mailbox_count(self, recipient: bytes | None, now_ms: int) -> int:
        """Unexpired envelopes for ``recipient`` (for everybody if None)."""
        params: tuple[Any, ...]
        if recipient is None:
            sql, params = "SELECT count(*) FROM mailbox WHERE expires_at_ms > %s", (now_ms,)
        else:
            sql = "SELECT count(*) FROM mailbox WHERE recipient = %s AND expires_at_ms > %s"
            params = (recipient, now_ms)
        row = await self._call(lambda conn: conn.execute(sql, params).fetchone())
        return int(row[0]) if row else 0

    async def mailbox_count_by_depositor(self, depositor: bytes, now_ms: int) -> int:
        """Unexpired envelopes ``depositor`` holds for all recipients."""
        row = await self._call(
            lambda conn: conn.execute(
                "SELECT count(*) FROM mailbox WHERE depositor = %s AND expires_at_ms > %s", (depositor, now_ms)
            ).fetchone()
        )
        return int(row[0]) if row else 0

    async def mailbox_list(self, recipient: bytes, now_ms: int, limit: int) -> list[MailboxEnvelope]:
        """Unexpired envelopes for ``recipient``, oldest first, at most ``limit``."""
        rows = await self._call(
            lambda conn: conn.execute(
                "SELECT id, recipient, dedupe_id, envelope, expires_at_ms, deposited_at_ms FROM mailbox "
                "WHERE recipient = %s AND expires_at_ms > %s ORDER BY id LIMIT %s",
                (recipient, now_ms, limit),
            ).fetchall()
        )
        return [MailboxEnvelope(int(r[0]), bytes(r[1]), bytes(r[2]), bytes(r[3]), int(r[4]), int(r[5])) for r in rows]

    async def mailbox_delete(self, recipient: bytes, ids: Sequence[int]) -> int:
        """Delete those of ``ids`` that belong to ``recipient``; how many went."""
        id_list = list(ids)
        if not id_list:
            return 0
        return await self._call(
            lambda conn: (
                conn.execute("DELETE FROM mailbox WHERE recipient = %s AND id = ANY(%s)", (recipient, id_list)).rowcount
            )
        )

    async def mailbox_expire(self, now_ms: int) -> int:
        """Delete every envelope whose expiry has passed; how many went."""
        return await self._call(
            lambda conn: conn.execute("DELETE FROM mailbox WHERE expires_at_ms <= %s", (now_ms,)).rowcount
        )

    # ------------------------------------------------------------------------------------ profiles, sessions

    async def put_profile(self, profile_id: str, display_name: str, data: Mapping[str, Any]) -> None:
        _check_text("profile_id", profile_id)
        _check_text("display_name", display_name)
        payload = Jsonb(dict(data))
        await self._call(
            lambda conn: conn.execute(
                "INSERT INTO profiles (profile_id, display_name, data) VALUES (%s, %s, %s) ON CONFLICT (profile_id) "
                "DO UPDATE SET display_name = EXCLUDED.display_name, data = EXCLUDED.data, updated_at = now()",
                (profile_id, display_name, payload),
            )
        )

    async def get_profile(self, profile_id: str) -> tuple[str, dict[str, Any]] | None:
        row = await self._call(
            lambda conn: conn.execute(
                "SELECT display_name, data FROM profiles WHERE profile_id = %s", (profile_id,)
            ).fetchone()
        )
        return None if row is None else (str(row[0]), dict(row[1]))

    async def put_session(self, session_id: str, subject: str, data: Mapping[str, Any], expires_at_ms: int) -> None:
        _check_text("session_id", session_id)
        _check_text("subject", subject)
        payload = Jsonb(dict(data))
        await self._call(
            lambda conn: conn.execute(
                "INSERT INTO sessions (session_id, subject, data, expires_at_ms) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (session_id) DO UPDATE SET subject = EXCLUDED.subject, data = EXCLUDED.data, "
                "expires_at_ms = EXCLUDED.expires_at_ms",
                (session_id, subject, payload, expires_at_ms),
            )
        )

    async def get_session(self, session_id: str, now_ms: int) -> Session | None:
        """The session unless it is unknown or expired at ``now_ms``."""
        row = await self._call(
            lambda conn: conn.execute(
                "SELECT session_id, subject, data, expires_at_ms FROM sessions "
                "WHERE session_id = %s AND expires_at_ms > %s",
                (session_id, now_ms),
            ).fetchone()
        )
        return None if row is None else Session(row[0], row[1], dict(row[2]), int(row[3]))

    async def delete_session(self, session_id: str) -> bool:
        n = await self._call(
            lambda conn: conn.execute("DELETE FROM sessions WHERE session_id = %s", (session_id,)).rowcount
        )
        return n > 0

    # ---------------------------------------------------------------------------------------- agent states

    async def save_agent_state(
        self, agent_id: str, key: str, state: Mapping[str, Any], expected_version: int | None = None
    ) -> int | None:
        """Store ``state``; its new version. With ``expected_version`` (0: must not exist yet) the write happens
        only if the stored version still is that one, else None (someone else wrote first)."""
        _check_text("agent_id", agent_id)
        _check_text("key", key)
        payload = Jsonb(dict(state))

        def work(conn: psycopg.Connection[TupleRow]) -> int | None:
            if expected_version is None:
                row = conn.execute(
                    "INSERT INTO agent_states (agent_id, key, state, version) VALUES (%s, %s, %s, 1) "
                    "ON CONFLICT (agent_id, key) DO UPDATE SET state = EXCLUDED.state, "
                    "version = agent_states.version + 1, updated_at = now() RETURNING version",
                    (agent_id, key, payload),
                ).fetchone()
            elif expected_version == 0:
                row = conn.execute(
                    "INSERT INTO agent_states (agent_id, key, state, version) VALUES (%s, %s, %s, 1) "
                    "ON CONFLICT (agent_id, key) DO NOTHING RETURNING version",
                    (agent_id, key, payload),
                ).fetchone()
            else:
                row = conn.execute(
                    "UPDATE agent_states SET state = %s, version = version + 1, updated_at = now() "
                    "WHERE agent_id = %s AND key = %s AND version = %s RETURNING version",
                    (payload, agent_id, key, expected_version),
                ).fetchone()
            return None if row is None else int(row[0])

        return await self._call(work)

    async def load_agent_state(self, agent_id: str, key: str) -> AgentState | None:
        row = await self._call(
            lambda conn: conn.execute(
                "SELECT agent_id, key, state, version FROM agent_states WHERE agent_id = %s AND key = %s",
                (agent_id, key),
            ).fetchone()
        )
        return None if row is None else AgentState(row[0], row[1], dict(row[2]), int(row[3]))
