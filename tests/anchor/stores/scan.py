"""Scan every text-like column of every table of a PostgreSQL database for a string (secrets must not be there)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

SCANNED_TYPES = ("text", "character varying", "character", "bytea", "json", "jsonb", "ARRAY")


def columns_containing(conn: psycopg.Connection[Any], needle: str) -> list[str]:
    """``table.column`` of each column holding ``needle`` (as a substring, or as UTF-8 bytes in bytea)."""
    columns = conn.execute(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND data_type = ANY(%s)",
        (list(SCANNED_TYPES),),
    ).fetchall()
    assert columns, "nothing to scan: is the schema there?"
    hits = []
    for schema, table, column, data_type in columns:
        col = sql.Identifier(column)
        if data_type == "bytea":
            cond = sql.SQL("position({} IN {}) > 0").format(sql.Literal(needle.encode()), col)
        else:
            cond = sql.SQL("strpos({}::text, {}) > 0").format(col, sql.Literal(needle))
        query = sql.SQL("SELECT count(*) FROM {}.{} WHERE {}").format(
            sql.Identifier(schema), sql.Identifier(table), cond
        )
        row = conn.execute(query).fetchone()
        if row and row[0]:
            hits.append(f"{table}.{column}")
    return hits
