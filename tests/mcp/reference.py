"""The reference MCP servers from npm, installed once into a cache dir (``~/.cache/aivillage-mcp-ref``) with the
system's Node: ``@modelcontextprotocol/server-memory`` (the memory server our knowledge-graph memory must be
indistinguishable from) and the MCP Inspector CLI. Tests skip, saying why, only when Node/npm is missing or the
npm registry cannot be reached."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("AIVILLAGE_MCP_REF", Path.home() / ".cache" / "aivillage-mcp-ref"))
MEMORY_SERVER = ("@modelcontextprotocol/server-memory", "2026.8.31")
# The reference's own dependency that shapes what it advertises: its SDK takes zod "^3.25 || ^4.0", and a fresh
# install resolves zod 4, whose JSON Schema leaves out the "additionalProperties": false that zod 3's (and our
# servers', extra="forbid") carries — the same reference then differs by the zod npm happened to pick. Pinned.
MEMORY_SERVER_ZOD = ("zod", "3.25.76")
INSPECTOR = ("@modelcontextprotocol/inspector", "0.14.3")
NPM_TIMEOUT_S = 600


def ensure_npm_package(name: str, version: str, *, with_: tuple[tuple[str, str], ...] = ()) -> Path:
    """The installed package's folder (npm install on first use, with the pinned packages ``with_`` beside it);
    pytest.skip when npm cannot fetch it."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are not installed (apt-get install nodejs npm)")
    folder = CACHE / "node_modules" / name
    wanted = [(name, version), *with_]
    if all(_installed(n, v) for n, v in wanted):
        return folder
    CACHE.mkdir(parents=True, exist_ok=True)
    if not (CACHE / "package.json").exists():
        (CACHE / "package.json").write_text('{"name": "aivillage-mcp-ref", "private": true}\n')
    try:
        proc = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", *(f"{n}@{v}" for n, v in wanted)],
            cwd=CACHE,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm install {name}@{version} timed out: the npm registry is unreachable")
    if proc.returncode != 0:
        pytest.skip(f"npm install {name}@{version} failed (registry unreachable?): {proc.stderr.strip()[-300:]}")
    return folder


def _installed(name: str, version: str) -> bool:
    manifest = CACHE / "node_modules" / name / "package.json"
    return manifest.exists() and f'"version": "{version}"' in manifest.read_text()


def memory_server_script() -> Path:
    return ensure_npm_package(*MEMORY_SERVER, with_=(MEMORY_SERVER_ZOD,)) / "dist" / "index.js"


def inspector_cli_script() -> Path:
    """The Inspector's CLI entry (``--method tools/list`` etc.; 0.14.3 speaks stdio, and SSE for URLs)."""
    ensure_npm_package(*INSPECTOR)
    return CACHE / "node_modules" / "@modelcontextprotocol" / "inspector-cli" / "build" / "index.js"
