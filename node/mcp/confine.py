"""Reading files for ``rag_add`` without a window between the check and the read.

A path is checked against ``[mcp] rag_roots`` and read through the same open file: the root is opened as a
directory, then each component below it is opened relative to its parent's descriptor with ``O_NOFOLLOW``, so a
symlink anywhere under the root (planted before the call or swapped in during it) is refused rather than followed,
and what is read is the file that was checked. Folders are walked the same way (``scandir`` on the open
directory; each entry opened relative to it, never by path). Bounded: files per call, bytes per file (the
knowledge base's ``rag.max_file_bytes``), total bytes per call, folder depth.

Synchronous and blocking: the MCP layer runs :func:`read_confined` in a worker thread.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.mcp.errors import NotAllowed

MAX_FILES = 10_000  # files one rag_add call may read
MAX_TOTAL_BYTES = 512 * 1024 * 1024  # bytes one rag_add call may read
MAX_DEPTH = 64  # folder levels below a named folder

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO must not hang us


@dataclass(slots=True)
class Confined:
    """What :func:`read_confined` found: files (path as named under its root, bytes) and per-path errors."""

    files: list[tuple[str, bytes]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    total_bytes: int = 0


def _roots(roots: list[str]) -> list[tuple[Path, Path]]:
    """(spelling as configured, resolved) per root; a path may be named through either."""
    out = []
    for r in roots:
        given = Path(os.path.normpath(Path(r).expanduser()))
        out.append((given, given.resolve()))
    return out


def _split(raw: str, roots: list[tuple[Path, Path]]) -> tuple[Path, tuple[str, ...]]:
    """(the resolved root, the components below it) for an absolute path lexically inside a root."""
    shown = ", ".join(str(r[1]) for r in roots)
    if "\0" in raw:
        raise NotAllowed("a rag_add path cannot contain a NUL character")
    p = Path(raw).expanduser()
    if not p.is_absolute():
        raise NotAllowed(f"{raw!r}: give an absolute path inside {shown}")
    if ".." in p.parts:
        raise NotAllowed(f"{raw!r}: '..' is not allowed in rag_add paths")
    p = Path(os.path.normpath(p))
    for given, real in roots:
        for base in (given, real):
            if p == base or p.is_relative_to(base):
                return real, p.relative_to(base).parts
    raise NotAllowed(f"{raw!r} is outside the folders open to rag_add ({shown})")


def _refusal(raw: str, exc: OSError) -> NotAllowed:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        return NotAllowed(f"{raw!r}: a symlink (or a non-folder) on the way; rag_add does not follow symlinks")
    return NotAllowed(f"{raw!r}: cannot open ({exc.strerror})")


class _Reader:
    def __init__(self, out: Confined, *, suffixes: frozenset[str], max_file_bytes: int) -> None:
        self.out = out
        self.suffixes = suffixes
        self.max_file_bytes = max_file_bytes

    def full(self) -> bool:
        return len(self.out.files) >= MAX_FILES or self.out.total_bytes >= MAX_TOTAL_BYTES

    def read_file(self, fd: int, shown: str) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            self.out.errors.append({"path": shown, "error": "not a regular file"})
            return
        if st.st_size > self.max_file_bytes:
            self.out.errors.append({"path": shown, "error": f"{st.st_size} bytes is larger than rag.max_file_bytes"})
            return
        if self.out.total_bytes + st.st_size > MAX_TOTAL_BYTES:
            self.out.errors.append({"path": shown, "error": f"over {MAX_TOTAL_BYTES} bytes in one call"})
            return
        chunks = []
        got = 0
        while got <= self.max_file_bytes:
            chunk = os.read(fd, min(1 << 20, self.max_file_bytes + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > self.max_file_bytes:  # it grew while we read
            self.out.errors.append({"path": shown, "error": "larger than rag.max_file_bytes"})
            return
        self.out.files.append((shown, b"".join(chunks)))
        self.out.total_bytes += got

    def walk(self, dir_fd: int, shown: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.out.errors.append({"path": shown, "error": f"more than {MAX_DEPTH} folder levels; skipped"})
            return
        with os.scandir(dir_fd) as it:
            entries = sorted((e.name, e.is_dir(follow_symlinks=False), e.is_symlink()) for e in it)
        for name, is_dir, is_link in entries:
            if self.full():
                self.out.errors.append({"path": shown, "error": f"more than {MAX_FILES} files or the byte bound"})
                return
            child = f"{shown}/{name}"
            if name.startswith("."):
                continue
            if is_link:
                self.out.errors.append({"path": child, "error": "a symlink; rag_add does not follow symlinks"})
                continue
            if not is_dir and Path(name).suffix.lower() not in self.suffixes:
                continue
            try:
                fd = os.open(name, _DIR_FLAGS if is_dir else _FILE_FLAGS, dir_fd=dir_fd)
            except OSError as exc:  # swapped for a symlink (ELOOP) or removed since the listing
                self.out.errors.append({"path": child, "error": str(_refusal(child, exc))})
                continue
            try:
                if is_dir:
                    self.walk(fd, child, depth + 1)
                else:
                    self.read_file(fd, child)
            finally:
                os.close(fd)


def read_confined(paths: list[str], roots: list[str], *, suffixes: frozenset[str], max_file_bytes: int) -> Confined:
    """Read the named files, and the supported files (``suffixes``) under the named folders, inside ``roots``.
    An explicitly named path outside every root, through a symlink, or missing refuses the whole call
    (:class:`NotAllowed`); problems found while walking a folder are listed in ``errors``."""
    if not roots:
        raise NotAllowed("rag_add is off: no folders are open to it (set mcp.rag_roots)")
    resolved = _roots(roots)
    out = Confined()
    reader = _Reader(out, suffixes=suffixes, max_file_bytes=max_file_bytes)
    for raw in paths:
        root, parts = _split(raw, resolved)
        shown = str(root.joinpath(*parts))
        fds: list[int] = []
        try:
            try:
                fds.append(os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
                for i, part in enumerate(parts):
                    last = i == len(parts) - 1
                    fds.append(os.open(part, _FILE_FLAGS if last else _DIR_FLAGS, dir_fd=fds[-1]))
            except OSError as exc:
                raise _refusal(raw, exc) from None
            fd = fds[-1]
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                reader.walk(fd, shown, 0)
            else:
                reader.read_file(fd, shown)
        finally:
            for f in fds:
                os.close(f)
    return out
