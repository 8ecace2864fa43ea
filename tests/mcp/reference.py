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
INSPECTOR = ("@modelcontextprotocol/inspector", "0.14.3")
NPM_TIMEOUT_S = 600


def ensure_npm_package(name: str, version: str) -> Path:
    """The installed package's folder (npm install on first use); pytest.skip when npm cannot fetch it."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are not installed (apt-get install nodejs npm)")
    folder = CACHE / "node_modules" / name
    manifest = folder / "package.json"
    if manifest.exists() and f'"version": "{version}"' in manifest.read_text():
        return folder
    CACHE.mkdir(parents=True, exist_ok=True)
    if not (CACHE / "package.json").exists():
        (CACHE / "package.json").write_text('{"name": "aivillage-mcp-ref", "private": true}\n')
    try:
        proc = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", f"{name}@{version}"],
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


def memory_server_script() -> Path:
    return ensure_npm_package(*MEMORY_SERVER) / "dist" / "index.js"


def inspector_cli_script() -> Path:
    """The Inspector's CLI entry (``--method tools/list`` etc.; 0.14.3 speaks stdio, and SSE for URLs)."""
    ensure_npm_package(*INSPECTOR)
    return CACHE / "node_modules" / "@modelcontextprotocol" / "inspector-cli" / "build" / "index.js"
