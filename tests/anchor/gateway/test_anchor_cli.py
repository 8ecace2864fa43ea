"""End to end: a real `village anchor run` (and `village run` with `[anchor] enabled = true`) process, the real
`village anchor keys` CLI, and HTTP over loopback against them, with real PostgreSQL and Redis."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from anchor.services_settings import ServiceSettings
from anchor.stores.postgres import PostgresStore
from node.cli import build_parser, main
from tests.anchor.gateway.conftest import RELAXED
from tests.anchor.gateway.test_gateway import until_settled

BIN = Path(sys.executable).parent
VILLAGE = [str(BIN / "village")] if (BIN / "village").exists() else [sys.executable, "-m", "node.cli"]
WAIT_S = 60.0  # real seconds for the daemon to come up; a passing run takes ~2 s


def village(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VILLAGE, *args, "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=WAIT_S, check=False
    )


@pytest.fixture
def anchor_dir(services: ServiceSettings, pg_dsn: str, short_tmp: Path) -> Iterator[Path]:
    data = short_tmp / "data"
    data.mkdir(mode=0o700)
    raw = dataclasses.asdict(services)
    raw["postgres"]["dbname"] = pg_dsn.rsplit("/", 1)[1]
    settings = data / "services.json"  # found there without any config key
    settings.write_text(json.dumps(raw))
    settings.chmod(0o600)
    limits = "\n".join(f"{k} = {v!r}" for k, v in RELAXED.items())
    (data / "config.toml").write_text(
        '[betanet]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\nmdns = false\n'
        f'[anchor]\ngateway_listen = "127.0.0.1:0"\n{limits}\n'
    )
    assert village("init", data_dir=data).returncode == 0
    yield data


def test_anchor_commands_have_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [["anchor"], ["anchor", "run"], ["anchor", "keys"]]
    commands += [["anchor", "keys", action] for action in ("create", "list", "revoke")]
    for argv in commands:
        with pytest.raises(SystemExit) as e:
            main([*argv, "--help"])
        assert e.value.code == 0
        assert "--json" in capsys.readouterr().out
    parser = build_parser()
    assert parser.parse_args(["anchor", "keys", "create", "x", "--role", "node"]).role == "node"
    assert main(["anchor"]) == 2  # no action: usage
    assert main(["anchor", "keys", "create", "x", "--role", "user", "--scope", "keys:admin"]) == 2
    assert "role 'user' cannot hold scope(s) keys:admin" in capsys.readouterr().err


@pytest.mark.parametrize(
    "how",
    ["anchor run", pytest.param("run with [anchor] enabled", marks=pytest.mark.slow)],  # ~15 s each
)
async def test_village_anchor_run_serves_the_gateway_and_keys_cli_controls_access(
    anchor_dir: Path, pg_dsn: str, how: str
) -> None:
    if how != "anchor run":
        with (anchor_dir / "config.toml").open("a") as f:
            f.write("enabled = true\n")
    created = village("anchor", "keys", "create", "alice", "--role", "user", "--json", data_dir=anchor_dir)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["role"] == "user" and key["secret"].startswith("avk_") and not key["revoked"]

    argv = [*VILLAGE, *(["anchor", "run"] if how == "anchor run" else ["run"]), "--data-dir", str(anchor_dir)]
    proc = await trio.lowlevel.open_process(argv, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log = b""
    try:
        assert proc.stderr is not None
        with trio.fail_after(WAIT_S):
            while (m := re.search(rb"anchor ready: gateway on (http://\S+)", log)) is None:
                chunk = await proc.stderr.receive_some(4096)
                assert chunk, log.decode()
                log += chunk
        url = m.group(1).decode()
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.post("/v1/auth/token", headers={"X-API-Key": key["secret"]})
            assert r.status_code == 200, r.text
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            ident = json.loads(village("id", "--json", data_dir=anchor_dir).stdout)
            assert (await client.get("/v1/node", headers=auth)).json()["peer_id"] == ident["peer_id"]
            r = await client.post("/v1/messages", headers=auth, json={"to": "0123456789abcdef", "text": "via http"})
            assert r.status_code == 202
            await until_settled(client, auth, r.json()["id"])  # the queue's consumer hands it to the node
            outbox = json.loads(
                (await trio.to_thread.run_sync(lambda: village("outbox", "--json", data_dir=anchor_dir))).stdout
            )
            assert [(m["id"], m["text"]) for m in outbox] == [(r.json()["id"], "via http")]  # the daemon's own node

            listed = json.loads(village("anchor", "keys", "list", "--json", data_dir=anchor_dir).stdout)
            assert [(k["key_id"], k["revoked"]) for k in listed] == [(key["key_id"], False)]
            assert all("secret" not in k for k in listed)
            revoked = await trio.to_thread.run_sync(
                lambda: village("anchor", "keys", "revoke", key["key_id"], data_dir=anchor_dir)
            )
            assert revoked.returncode == 0 and "revoked" in revoked.stdout
            r = await client.get("/v1/node", headers=auth)
            assert (r.status_code, r.json()["error"]) == (401, "key_revoked")  # the live token died at once
            again = village("anchor", "keys", "revoke", key["key_id"], data_dir=anchor_dir)
            assert again.returncode == 1 and "no active API key" in again.stderr
        listed = json.loads(village("anchor", "keys", "list", "--json", data_dir=anchor_dir).stdout)
        assert [k["revoked"] for k in listed] == [True]
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(WAIT_S):
            while chunk := await proc.stderr.receive_some(4096):
                log += chunk
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
    assert code == 0, log.decode()
    assert b"node stopped cleanly" in log

    store = PostgresStore(pg_dsn)
    try:
        audit = [(e.actor, e.action, e.target) for e in reversed(await store.recent_audit())]
    finally:
        await store.aclose()
    kid = key["key_id"]
    assert audit == [
        ("cli", "keys.create", "alice"),
        (f"key:{kid}", "auth.token", kid),
        (f"key:{kid}", "messages.send", "0123456789abcdef"),
        ("cli", "keys.revoke", kid),
        ("cli", "keys.revoke", kid),  # the second attempt is recorded too, though it changed nothing
    ]


def test_a_taken_gateway_port_fails_the_start_with_a_reason(anchor_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = (anchor_dir / "config.toml").read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}")
        (anchor_dir / "config.toml").write_text(config)
        r = village("anchor", "run", data_dir=anchor_dir)
    assert r.returncode == 1
    assert f"village: the gateway cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr


async def test_an_anchors_mcp_memory_is_in_the_graph_store_and_village_memory_exports_and_erases_it(
    anchor_dir: Path, services: ServiceSettings
) -> None:
    """`village anchor run` keeps the node's MCP memory on the Bolt graph server: what a `village mcp` client
    creates is there (not in the local SQLite file), `village memory export` shows it, `village memory
    purge-legacy --yes` deletes only rows in the old plaintext format, `village memory forget` erases it from the
    server."""
    from mcp.client.client import Client
    from mcp.client.stdio import StdioServerParameters

    from anchor.mcp_memory import BoltMemoryStorage
    from node.mcp.graph import KnowledgeGraph
    from tests.anchor.stores.test_mcp_memory import plant_legacy_rows
    from tests.mcp.helpers import mcp_settings

    config = anchor_dir / "config.toml"
    config.write_text(config.read_text().replace("[anchor]\n", '[anchor]\nmcp_memory = "graph"\n'))
    argv = [*VILLAGE, "anchor", "run", "--data-dir", str(anchor_dir)]
    proc = await trio.lowlevel.open_process(argv, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log = b""
    ent = {"name": "Ada", "entityType": "person", "observations": ["kept on the anchor"]}
    ns = "mcp:" + json.loads(village("id", "--json", data_dir=anchor_dir).stdout)["peer_id"]

    def on_server() -> dict[str, object]:
        key = (anchor_dir / "anchor" / "mcp-memory.key").read_bytes()
        g = KnowledgeGraph(BoltMemoryStorage(services.graph.bolt_url, namespace=ns, key=key), mcp_settings())
        try:
            return g.read_graph()
        finally:
            g.close()

    try:
        assert proc.stderr is not None
        with trio.fail_after(WAIT_S):
            while b"anchor ready" not in log:
                chunk = await proc.stderr.receive_some(4096)
                assert chunk, log.decode()
                log += chunk
        params = StdioServerParameters(command=VILLAGE[0], args=[*VILLAGE[1:], "mcp", "--data-dir", str(anchor_dir)])
        async with Client(params) as client:
            created = await client.call_tool("create_entities", {"entities": [ent]})
            assert not created.is_error, created
        assert await trio.to_thread.run_sync(on_server) == {"entities": [ent], "relations": []}
        assert not (anchor_dir / "mcp" / "memory.sqlite3").exists()
        exported = await trio.to_thread.run_sync(lambda: village("memory", "export", data_dir=anchor_dir))
        assert exported.returncode == 0, exported.stderr
        assert json.loads(exported.stdout)["knowledge_graph"]["entities"] == [ent]
        # Rows an unreleased version wrote in the clear: `village memory purge-legacy --yes` deletes only them.
        await trio.to_thread.run_sync(plant_legacy_rows, services, ns)
        refused = await trio.to_thread.run_sync(lambda: village("memory", "purge-legacy", data_dir=anchor_dir))
        assert refused.returncode != 0 and "--yes" in refused.stderr
        purged = await trio.to_thread.run_sync(lambda: village("memory", "purge-legacy", "--yes", data_dir=anchor_dir))
        assert purged.returncode == 0, purged.stderr
        assert "active store: 1 entities and 1 relations deleted" in purged.stdout, purged.stdout
        assert await trio.to_thread.run_sync(on_server) == {"entities": [ent], "relations": []}
        erased = await trio.to_thread.run_sync(lambda: village("memory", "forget", "--yes", data_dir=anchor_dir))
        assert erased.returncode == 0 and "erased 1 entities" in erased.stdout, erased.stderr
        assert await trio.to_thread.run_sync(on_server) == {"entities": [], "relations": []}
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(WAIT_S):
            while chunk := await proc.stderr.receive_some(4096):
                log += chunk
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
    assert code == 0, log.decode()
