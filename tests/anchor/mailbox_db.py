"""PostgreSQL helpers for the mailbox tests: the connection string of the servers `scripts/services up` runs, and
a scan of every text-like column of every table for a string."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import psycopg
from psycopg import sql

from anchor.services_settings import ServiceSettings

SCANNED_TYPES = ("text", "character varying", "character", "bytea", "json", "jsonb")


def settings_for_database(services: ServiceSettings, dsn: str, path: Path) -> Path:
    """Write (0600) a services settings file like ``scripts/services``' own, but naming the database of ``dsn``
    (the ``pg_dsn`` fixture's fresh one), for a daemon's ``anchor.services_settings``."""
    raw = dataclasses.asdict(services)
    raw["postgres"]["dbname"] = dsn.rsplit("/", 1)[1]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(raw, f)
    return path


def find_text_anywhere(conn: psycopg.Connection[tuple[object, ...]], text: str) -> list[str]:
    """``table.column`` of every column (text, varchar, bytea, json, jsonb; every schema but the system ones) in
    which ``text`` occurs — as UTF-8 bytes in bytea, as a substring elsewhere."""
    columns = conn.execute(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND data_type = ANY(%s)",
        (list(SCANNED_TYPES),),
    ).fetchall()
    assert columns, "no columns scanned: is the schema there?"
    hits = []
    for schema, table, column, data_type in columns:
        col = sql.Identifier(str(column))
        if data_type == "bytea":
            cond = sql.SQL("position({} in {}) > 0").format(sql.Literal(text.encode()), col)
        else:
            cond = sql.SQL("strpos({}::text, {}) > 0").format(col, sql.Literal(text))
        query = sql.SQL("SELECT count(*) FROM {}.{} WHERE {}").format(
            sql.Identifier(str(schema)), sql.Identifier(str(table)), cond
        )
        row = conn.execute(query).fetchone()
        if row is not None and row[0]:
            hits.append(f"{schema}.{table}.{column}")
    return hits
