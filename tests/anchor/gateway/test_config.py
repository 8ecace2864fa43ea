"""The [anchor] config section and where the anchor finds its stores' settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from anchor.gateway.auth import issuer_name, load_shared_secret
from anchor.run import services_settings_path
from anchor.services_settings import SETTINGS_FILE
from anchor.settings import AnchorSection
from node.errors import ConfigError, StartupError
from node.schema import parse_host_port
from node.settings import config_from_mapping
from tools.services import DEFAULT_DIR


def test_defaults_and_bad_values_name_the_key() -> None:
    cfg = config_from_mapping({})
    assert cfg.section(AnchorSection).enabled is False and cfg.section(AnchorSection).gateway_listen == "127.0.0.1:8000"
    assert parse_host_port("k", "[::1]:0") == ("::1", 0)
    for raw, message in [
        ({"gateway_listen": "8000"}, "anchor.gateway_listen: expected HOST:PORT"),
        ({"gateway_listen": "localhost:http"}, "anchor.gateway_listen: expected HOST:PORT"),
        ({"gateway_listen": "127.0.0.1:70000"}, "anchor.gateway_listen: expected HOST:PORT"),
        ({"token_ttl_s": 1}, "anchor.token_ttl_s: expected a value from 10 to 86,400"),
        ({"key_burst": 0}, "anchor.key_burst"),
        ({"enabled": "yes"}, "anchor.enabled: expected true or false"),
        ({"tokens": 1}, "anchor.tokens: unknown key"),
        ({"cluster": "eu-1"}, "anchor.jwt_secret_file: required with anchor.cluster"),
        ({"cluster": "a b", "jwt_secret_file": "/s"}, "anchor.cluster: 1 to 64 letters"),
        ({"cluster": "{x}", "jwt_secret_file": "/s"}, "anchor.cluster: 1 to 64 letters"),
        ({"claim_idle_s": 0.5}, "anchor.claim_idle_s"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            config_from_mapping({"anchor": raw})


def test_services_settings_are_found_in_order(tmp_path: Path) -> None:
    cfg = config_from_mapping({}, data_dir=tmp_path)
    assert services_settings_path(cfg, env={}) == DEFAULT_DIR / SETTINGS_FILE
    (tmp_path / "services.json").write_text("{}")
    assert services_settings_path(cfg, env={}) == tmp_path / "services.json"
    assert services_settings_path(cfg, env={"VILLAGE_SERVICES_SETTINGS": "/e.json"}) == Path("/e.json")
    explicit = config_from_mapping({"anchor": {"services_settings": "/x.json"}}, data_dir=tmp_path)
    assert services_settings_path(explicit, env={"VILLAGE_SERVICES_SETTINGS": "/e.json"}) == Path("/x.json")


def test_the_shared_token_secret_is_read_never_made_and_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "jwt.secret"
    with pytest.raises(StartupError, match="does not exist; make it once"):
        load_shared_secret(path)
    assert not path.exists()  # each replica making its own would split the tokens
    path.write_bytes(b"x" * 31)
    path.chmod(0o600)
    with pytest.raises(StartupError, match="holds 31 bytes; at least 32"):
        load_shared_secret(path)
    good = bytes(range(32))  # 32 distinct values (what 32 random bytes nearly always hold: ~30)
    path.write_bytes(good)
    path.chmod(0o644)
    with pytest.raises(StartupError, match="chmod 600"):
        load_shared_secret(path)
    path.chmod(0o600)
    assert load_shared_secret(path) == good
    # Guessable secrets (one repeated byte, a repeated password) are refused with the way to make a random one.
    for weak in (b"k" * 32, b"changeme" * 4, b"0123456789abcde" * 3):
        path.write_bytes(weak)
        with pytest.raises(StartupError, match=r"does not look random .* head -c 32 /dev/urandom"):
            load_shared_secret(path)


def test_a_cluster_issuer_never_equals_a_lone_anchors() -> None:
    peer_hex = "ab" * 32
    lone = issuer_name(peer_hex)
    assert lone == f"aivillage-anchor:{peer_hex}"
    # A cluster may be named like a peer ID (the name's pattern allows 64 hex digits): its issuer still differs.
    cluster = issuer_name("cd" * 32, peer_hex)
    assert AnchorSection(cluster=peer_hex, jwt_secret_file="/x").cluster == peer_hex
    assert cluster == f"aivillage-anchor:cluster:{peer_hex}" and cluster != lone
