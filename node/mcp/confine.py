"""Reading files for ``rag_add`` without a window between the check and the read.

A path is checked against ``[mcp] rag_roots`` and read through the same open file: the root is opened as a
directory, then each component below it is opened relative to its parent's descriptor with ``O_NOFOLLOW``, so a
symlink anywhere under the root (planted before the call or swapped in during it) is refused rather than followed,
and what is read is the file that was checked. Folders are walked the same way (``scandir`` on the open
directory; each entry opened relative to it, never by path). A regular file with more than one hard link is
refused too (a link inside a root to a file outside it cannot be told apart from the path).

Streaming: :class:`ConfinedWalk` yields one open file at a time (:class:`Found`: its descriptor and size) and the
caller reads it (:func:`read_found`), uses the bytes and drops them before asking for the next, so a call holds one
file's bytes at a time (the MCP layer adds a node-wide budget shared by concurrent calls). A file reached twice
(named twice, or through two named folders) is read once (``st_dev``/``st_ino``). Bounded: files per call, bytes
per file (the knowledge base's ``rag.max_file_bytes``), bytes read per call, folder entries looked at per call,
folder depth, error entries kept (the rest counted); ``cancel`` stops a walk at its next entry.

Synchronous and blocking: the MCP layer advances the walk and reads in a worker thread.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.mcp.errors import NotAllowed

MAX_FILES = 10_000  # files one rag_add call may read
MAX_TOTAL_BYTES = 512 * 1024 * 1024  # bytes one rag_add call may read (one file at a time)
MAX_DEPTH = 64  # folder levels below a named folder
MAX_ENTRIES = 100_000  # folder entries one rag_add call may look at
MAX_ERRORS = 100  # error entries kept per call; the rest are counted

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO must not hang us


@dataclass(slots=True)
class Confined:
    """What :func:`read_confined` found: files (path as named under its root, bytes) and per-path errors."""

    files: list[tuple[str, bytes]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    total_bytes: int = 0
    errors_more: int = 0


@dataclass(frozen=True, slots=True)
class Found:
    """A file to read: valid until the walk is advanced (the walk closes ``fd`` then)."""

    shown: str
    fd: int
    size: int


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


class ConfinedWalk:
    """The files named by ``paths`` and the supported files (``suffixes``) under the named folders, inside
    ``roots``, one at a time (iterate). An explicitly named path outside every root, through a symlink, or missing
    refuses the whole call at construction (:class:`NotAllowed`); problems found later are in ``errors``."""

    def __init__(
        self,
        paths: list[str],
        roots: list[str],
        *,
        suffixes: frozenset[str],
        max_file_bytes: int,
        cancel: threading.Event | None = None,
    ) -> None:
        if not roots:
            raise NotAllowed("rag_add is off: no folders are open to it (set mcp.rag_roots)")
        resolved = _roots(roots)
        self.named = [_split(raw, resolved) for raw in paths]
        for (root, parts), raw in zip(self.named, paths, strict=True):  # every named path is there, no symlink
            for fd in self._open_chain(root, parts, raw):
                os.close(fd)
        self.suffixes = suffixes
        self.max_file_bytes = max_file_bytes
        self.cancel = cancel or threading.Event()
        self.errors: list[dict[str, Any]] = []
        self.errors_more = 0
        self.files = 0
        self.total_bytes = 0
        self.entries = 0
        self._seen: set[tuple[int, int]] = set()

    @staticmethod
    def _open_chain(root: Path, parts: tuple[str, ...], raw: str) -> list[int]:
        fds: list[int] = []
        try:
            fds.append(os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                fds.append(os.open(part, _FILE_FLAGS if last else _DIR_FLAGS, dir_fd=fds[-1]))
        except OSError as exc:
            for f in fds:
                os.close(f)
            raise _refusal(raw, exc) from None
        return fds

    def error(self, path: str, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"path": path, "error": message})
        else:
            self.errors_more += 1

    def full(self) -> bool:
        return self.files >= MAX_FILES or self.total_bytes >= MAX_TOTAL_BYTES

    def __iter__(self) -> Iterator[Found]:
        for (root, parts), raw in zip(
            self.named, [str(root.joinpath(*parts)) for root, parts in self.named], strict=True
        ):
            if self.cancel.is_set():
                return
            try:
                fds = self._open_chain(root, parts, raw)
            except NotAllowed as exc:  # changed since the check
                self.error(raw, str(exc))
                continue
            try:
                fd = fds[-1]
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    yield from self._walk(fd, raw, 0)
                else:
                    yield from self._file(fd, raw)
            finally:
                for f in fds:
                    os.close(f)

    def _file(self, fd: int, shown: str) -> Iterator[Found]:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            self.error(shown, "not a regular file")
            return
        if st.st_nlink > 1:
            self.error(shown, "a file with several hard links; rag_add does not read those")
            return
        if (st.st_dev, st.st_ino) in self._seen:
            return
        if st.st_size > self.max_file_bytes:
            self.error(shown, f"{st.st_size} bytes is larger than rag.max_file_bytes")
            return
        if self.total_bytes + st.st_size > MAX_TOTAL_BYTES:
            self.error(shown, f"over {MAX_TOTAL_BYTES} bytes in one call")
            return
        if len(self._seen) < MAX_FILES:
            self._seen.add((st.st_dev, st.st_ino))
        self.files += 1
        self.total_bytes += st.st_size
        yield Found(shown, fd, st.st_size)

    def _walk(self, dir_fd: int, shown: str, depth: int) -> Iterator[Found]:
        if depth > MAX_DEPTH:
            self.error(shown, f"more than {MAX_DEPTH} folder levels; skipped")
            return
        listed: list[tuple[str, bool, bool]] = []
        with os.scandir(dir_fd) as it:
            for e in it:
                if self.entries >= MAX_ENTRIES or self.cancel.is_set():
                    break
                self.entries += 1
                listed.append((e.name, e.is_dir(follow_symlinks=False), e.is_symlink()))
        if self.entries >= MAX_ENTRIES:
            self.error(shown, f"more than {MAX_ENTRIES} folder entries in one call; the rest skipped")
        for name, is_dir, is_link in sorted(listed):
            if self.cancel.is_set():
                return
            if self.full():
                self.error(shown, f"more than {MAX_FILES} files or the byte bound")
                return
            child = f"{shown}/{name}"
            if name.startswith("."):
                continue
            if is_link:
                self.error(child, "a symlink; rag_add does not follow symlinks")
                continue
            if not is_dir and Path(name).suffix.lower() not in self.suffixes:
                continue
            try:
                fd = os.open(name, _DIR_FLAGS if is_dir else _FILE_FLAGS, dir_fd=dir_fd)
            except OSError as exc:  # swapped for a symlink (ELOOP) or removed since the listing
                self.error(child, str(_refusal(child, exc)))
                continue
            try:
                if is_dir:
                    yield from self._walk(fd, child, depth + 1)
                else:
                    yield from self._file(fd, child)
            finally:
                os.close(fd)


def read_found(found: Found) -> bytes | None:
    """The file's bytes, at most its size when it was found; None if it grew since (the caller reserved that
    size)."""
    chunks = []
    got = 0
    while got <= found.size:
        chunk = os.read(found.fd, min(1 << 20, found.size + 1 - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return None if got > found.size else b"".join(chunks)


def read_confined(paths: list[str], roots: list[str], *, suffixes: frozenset[str], max_file_bytes: int) -> Confined:
    """Every file of a :class:`ConfinedWalk`, read and kept (small inputs and tests; rag_add streams instead)."""
    walk = ConfinedWalk(paths, roots, suffixes=suffixes, max_file_bytes=max_file_bytes)
    out = Confined()
    for found in walk:
        data = read_found(found)
        if data is None:
            walk.error(found.shown, "larger than rag.max_file_bytes")  # it grew while we read
            continue
        out.files.append((found.shown, data))
        out.total_bytes += len(data)
    out.errors, out.errors_more = walk.errors, walk.errors_more
    return out
