"""The shipped scale-out examples: configs/replicas/compose.yaml (two gateway replicas, HAProxy, the servers) and
configs/haproxy.cfg. No Docker here: the compose file is parsed and its wiring checked against the settings the
gateway really loads; HAProxy checks its own config when it is installed (Debian's `haproxy`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no stubs installed; safe_load returns Any

from anchor.services_settings import load_settings
from anchor.settings import AnchorSection
from node.schema import parse_host_port
from node.settings import config_from_mapping

REPO = Path(__file__).resolve().parents[3]
REPLICAS = REPO / "configs" / "replicas"
HAPROXY_CFG = REPO / "configs" / "haproxy.cfg"


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((REPLICAS / "compose.yaml").read_text())
    return compose


def test_compose_runs_two_replicas_of_one_anchor_on_shared_servers() -> None:
    compose = _compose()
    services = compose["services"]
    gateways = {name: s for name, s in services.items() if "anchor run" in " ".join(s.get("command", []))}
    assert sorted(gateways) == ["gateway-1", "gateway-2"]
    # Each its own node: its own data volume (identity, outbox); the same settings file and secrets.
    data_volumes = {name: [v for v in s["volumes"] if v.endswith(":/data")] for name, s in gateways.items()}
    assert all(len(v) == 1 for v in data_volumes.values())
    assert len({v[0] for v in data_volumes.values()}) == 2
    assert {v[0].split(":")[0] for v in data_volumes.values()} <= set(compose["volumes"])
    mounted = [
        ({c["source"]: c["target"] for c in s["configs"]}, {x["source"]: x["target"] for x in s["secrets"]})
        for s in gateways.values()
    ]
    assert mounted[0] == mounted[1]
    configs_at, secrets_at = mounted[0]
    for s in gateways.values():
        assert f"--config {configs_at['gateway']}" in " ".join(s["command"])

    # The settings the replicas run with load, name one cluster, and point at the mounted secrets.
    raw = tomllib.loads((REPLICAS / compose["configs"]["gateway"]["file"]).read_text())
    anchor = config_from_mapping(raw).section(AnchorSection)
    assert anchor.cluster and anchor.jwt_secret_file == secrets_at["jwt"]
    assert anchor.services_settings == secrets_at["services"]
    host, port = parse_host_port("anchor.gateway_listen", anchor.gateway_listen)
    assert host == "0.0.0.0" and anchor.allow_plaintext_public  # reached only through HAProxy
    assert compose["secrets"]["services"]["file"] == "./services.json"

    # The servers file (the example of it) names the compose services, which the gateways wait for.
    servers = load_settings(REPLICAS / "services.json.example")
    assert (servers.postgres.host, servers.redis.host, servers.graph.host) == ("postgres", "redis", "neo4j")
    assert servers.graph.kind == "neo4j" and servers.graph.bolt_port == 7687
    for s in gateways.values():
        assert set(s["depends_on"]) == {"postgres", "redis", "neo4j"}
    assert "--appendonly" in services["redis"]["command"]  # the queue survives a Redis restart
    policy = services["redis"]["command"].index("--maxmemory-policy")
    assert services["redis"]["command"][policy + 1] == "noeviction"  # the anchor refuses any other
    for name in ("postgres", "redis", "neo4j", *gateways):
        assert "ports" not in services[name]  # only the load balancer is published

    # HAProxy reaches each replica at its gateway port and is the only published port (loopback).
    lb = services["haproxy"]
    assert lb["environment"]["ANCHOR_GATEWAY_1"] == f"gateway-1:{port}"
    assert lb["environment"]["ANCHOR_GATEWAY_2"] == f"gateway-2:{port}"
    assert any(v.startswith("../haproxy.cfg:") for v in lb["volumes"])
    assert all(p.startswith("127.0.0.1:") for p in lb["ports"])
    # The replicas take X-Forwarded-For from HAProxy's fixed address only (their per-IP limit counts clients).
    assert anchor.trusted_proxies == (lb["networks"]["default"]["ipv4_address"],)
    assert "option forwardfor" in HAPROXY_CFG.read_text()


PASSWORD_FLAGS = re.compile(r"(^|\s)(-a|-p|--pass\S*|--requirepass|-P)(\s|=|$)")


def test_no_password_on_a_command_line_or_in_an_environment() -> None:
    text = (REPLICAS / "compose.yaml").read_text()
    compose = _compose()
    assert "PASSWORD}" not in text and "PASSWORD:?" not in text  # no password interpolated from the environment
    mounted_at: dict[str, set[str]] = {}
    for name, service in compose["services"].items():
        secrets_here = {x["target"] for x in service.get("secrets", [])}
        mounted_at[name] = secrets_here
        for x in service.get("secrets", []):
            assert x["source"] in compose["secrets"]  # a file secret the header tells the operator to make
        command = service.get("command", [])
        lines = [" ".join(command) if isinstance(command, list) else command]
        test = service.get("healthcheck", {}).get("test", [])
        lines.append(" ".join(test[1:]) if isinstance(test, list) else test)
        for line in lines:
            assert not PASSWORD_FLAGS.search(line), (name, line)  # redis-cli -a, cypher-shell -p, --requirepass
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|AUTH", key):
                assert key.endswith("_FILE") and value in secrets_here, (name, key)  # a path to a mounted secret
    assert mounted_at["postgres"] == {"/run/secrets/pg_password"}
    assert "/run/secrets/redis.conf" in compose["services"]["redis"]["command"]
    assert "REDISCLI_AUTH=" in compose["services"]["redis"]["healthcheck"]["test"][1]
    assert "NEO4J_PASSWORD=" in compose["services"]["neo4j"]["healthcheck"]["test"][1]
    # The secret files an operator makes next to the compose file never get into git.
    ignored = (REPO / ".gitignore").read_text().split()
    assert "configs/replicas/*.secret" in ignored and "configs/replicas/services.json" in ignored


def test_haproxy_listens_on_loopback_unless_told_and_drops_a_clients_forwarded_proto() -> None:
    text = HAPROXY_CFG.read_text()
    [bind] = re.findall(r"^\s+bind (.*)$", text, re.M)
    assert bind == '"${ANCHOR_LB_BIND-127.0.0.1:8080}"'  # plain HTTP beyond loopback only as an opt-in
    assert "bind :443 ssl crt" in text  # the TLS example the opt-in is documented with
    drop = text.index("http-request del-header X-Forwarded-Proto")
    assert drop < text.index("http-request set-header X-Forwarded-Proto")
    # The README's one-machine recipe keeps it on loopback.
    recipe = (REPO / "README.md").read_text()
    assert "ANCHOR_LB_BIND=127.0.0.1:8080 ANCHOR_GATEWAY_1=127.0.0.1:8001" in recipe


def test_haproxy_config_health_checks_the_gateways_and_keeps_mailbox_sessions_on_one_replica() -> None:
    text = HAPROXY_CFG.read_text()
    backends = dict(re.findall(r"^backend (\S+)\n((?:[ \t].*\n|\n)*)", text, re.M))
    assert sorted(backends) == ["gateways", "mailbox"]
    for body in backends.values():
        assert "option httpchk GET /v1/health" in body and "http-check expect status 200" in body
        assert re.search(r'server gw1 "\$\{ANCHOR_GATEWAY_1-gateway-1:8000\}"', body)
        assert re.search(r'server gw2 "\$\{ANCHOR_GATEWAY_2-gateway-2:8000\}"', body)
    assert "balance roundrobin" in backends["gateways"] and "balance source" in backends["mailbox"]
    assert "use_backend mailbox if { path_beg /v1/mailbox }" in text
    # The route the check asks is the gateway's unauthenticated health route.
    from anchor.gateway import app as gateway_app

    assert '@app.get("/v1/health"' in Path(gateway_app.__file__).read_text()


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="Debian's haproxy is not installed")
def test_haproxy_accepts_the_config() -> None:
    env = {**os.environ, "ANCHOR_GATEWAY_1": "127.0.0.1:8001", "ANCHOR_GATEWAY_2": "127.0.0.1:8002"}
    checked = subprocess.run(
        ["haproxy", "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert checked.returncode == 0, checked.stderr + checked.stdout
