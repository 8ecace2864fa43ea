"""The C allocator's knobs (node/malloc.py): arenas capped, free pages given back, the settings that apply them."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from node import daemon, malloc
from node.errors import ConfigError
from node.rag.service import RagService
from node.rag.settings import RagSection
from node.settings import config_from_mapping

from .rag.helpers import NoEmbedder

glibc = pytest.mark.skipif(not malloc.available(), reason="glibc only")

# A fresh interpreter per check: arenas and heaps are process-wide state.
_ARENAS = """
import ctypes, sys, threading
from node import malloc
cap = int(sys.argv[1])
malloc.set_arena_max(cap)
def work():
    keep = [ctypes.create_string_buffer(4096) for _ in range(64)]  # malloc in this thread's arena
    barrier.wait()
barrier = threading.Barrier(8)
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.open_memstream.restype = ctypes.c_void_p
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
buf, size = ctypes.c_char_p(), ctypes.c_size_t()
f = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
libc.malloc_info(0, f)
libc.fclose(f)
print(buf.value.decode().count("<heap nr="))
"""

_TRIM = """
import sys
from node import malloc
def rss_anon_kib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
blocks = [bytearray(b"x" * 65536) for _ in range(1600)]  # 100 MiB below the mmap threshold: heap memory
del blocks[:-1]  # freed, but the last block pins the top of the heap: nothing is given back by free()
before = rss_anon_kib()
released = malloc.trim()
print(released, before - rss_anon_kib())
"""


_MMAP = """
import ctypes, sys
from node import malloc
applied = malloc.set_mmap_threshold(int(sys.argv[1]))
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def rss_anon_kib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
libc.free(libc.malloc(4 << 20))  # a mapped 4 MiB block freed: glibc's dynamic threshold rises to 4 MiB
blocks = [libc.malloc(1 << 20) for _ in range(64)]  # 64 MiB of 1 MiB blocks
for b in blocks:
    ctypes.memset(b, 1, 1 << 20)
before = rss_anon_kib()
for b in blocks[:-1]:
    libc.free(b)  # the last block pins the top of the heap: heap blocks are not given back by free()
print(applied, before - rss_anon_kib())
"""


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", **(env or {})},
    )
    return r.stdout.strip()


@glibc
def test_arena_max_caps_the_arenas_threads_get() -> None:
    assert int(_run(_ARENAS, "1")) == 1  # eight allocating threads share the main heap
    assert int(_run(_ARENAS, "0")) > 1  # glibc's default: the threads get arenas of their own


@glibc
def test_the_operators_malloc_arena_max_wins_over_the_setting() -> None:
    # MALLOC_ARENA_MAX=1 in the environment (a systemd unit's) and the setting's 4: the environment's cap holds.
    assert int(_run(_ARENAS, "4", env={"MALLOC_ARENA_MAX": "1"})) == 1
    # An empty value (systemd's `Environment=MALLOC_ARENA_MAX=`) is no cap of glibc's: the setting applies.
    assert int(_run(_ARENAS, "1", env={"MALLOC_ARENA_MAX": ""})) == 1
    assert int(_run(_ARENAS, "1", env={"MALLOC_ARENA_MAX": "0"})) == 1  # 0 is no cap of glibc's either


def test_which_environment_values_are_a_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, cap in [
        ("1", True),
        ("8", True),
        (" 2", True),
        ("0x1", True),
        ("1x", True),
        ("010", True),
        ("0", False),
        ("", False),
        ("x", False),
        ("-1", False),
        ("00", False),
    ]:
        monkeypatch.setenv("MALLOC_ARENA_MAX", value)
        assert malloc._env_arena_cap() is cap, value


@glibc
def test_trim_gives_free_heap_pages_back() -> None:
    released, freed_kib = _run(_TRIM).split()
    assert released == "True"
    assert int(freed_kib) > 50 * 1024  # most of the ~100 MiB freed in the middle of the heap


@glibc
def test_a_fixed_mmap_threshold_gives_freed_big_blocks_back() -> None:
    applied, freed_kib = _run(_MMAP, "131072").split()
    assert applied == "True" and int(freed_kib) > 48 * 1024  # each 1 MiB block was its own mapping
    applied, freed_kib = _run(_MMAP, "0").split()  # glibc's dynamic threshold: the blocks stayed in the heap
    assert applied == "False" and int(freed_kib) < 16 * 1024


@glibc
def test_the_operators_mmap_threshold_wins_over_the_setting() -> None:
    # MALLOC_MMAP_THRESHOLD_ in the environment (8 MiB: the 1 MiB blocks are heap blocks): the setting is not applied.
    applied, freed_kib = _run(_MMAP, "131072", env={"MALLOC_MMAP_THRESHOLD_": str(8 << 20)}).split()
    assert applied == "False" and int(freed_kib) < 16 * 1024


def test_mmap_threshold_out_of_range_names_the_key() -> None:
    for bad in (-1, 33_554_433):
        with pytest.raises(ConfigError, match=r"node\.malloc_mmap_threshold_bytes"):
            config_from_mapping({"node": {"malloc_mmap_threshold_bytes": bad}})
    assert config_from_mapping({}).node.malloc_mmap_threshold_bytes == 131_072  # fixed: glibc's initial value


def test_arena_max_out_of_range_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"node\.malloc_arena_max"):
        config_from_mapping({"node": {"malloc_arena_max": -1}})
    assert config_from_mapping({}).node.malloc_arena_max == 2


def test_the_daemon_applies_its_malloc_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.toml").write_text("[node]\nmalloc_arena_max = 3\nmalloc_mmap_threshold_bytes = 262144\n")
    applied: list[int] = []

    class Stop(Exception):
        pass

    def record(n: int) -> bool:
        applied.append(n)
        return True

    def stop(n: int) -> bool:
        applied.append(n)
        raise Stop  # nothing further: no libp2p, no log handler, no node in the test process

    monkeypatch.setattr(malloc, "set_arena_max", record)
    monkeypatch.setattr(malloc, "set_mmap_threshold", stop)
    args = argparse.Namespace(data_dir=tmp_path, config=tmp_path / "config.toml", log_level=None)
    with pytest.raises(Stop):
        daemon.run_command(args)
    assert applied == [3, 262144]


@pytest.mark.parametrize("on", [True, False])
async def test_rag_add_trims_after_each_group_when_set(tmp_path: Path, on: bool) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"d{i}.txt").write_text(f"document {i} about topic {i}")
    settings = dataclasses.replace(RagSection(), mode="bm25", malloc_trim=on)
    svc = RagService(settings, tmp_path / "rag", embedder=NoEmbedder())
    assert (await svc.add([str(docs)]))["added"] == 3
    trims = (await svc.stats())["malloc_trims"]
    await svc.aclose()
    assert trims == (1 if on and malloc.available() else 0)


@glibc
@pytest.mark.parametrize("value", ["", "abc", "-1", str(40 << 20), "8388608x"])
def test_an_environment_threshold_glibc_may_ignore_does_not_leave_none_in_force(value: str) -> None:
    """Review of ingest4: any MALLOC_MMAP_THRESHOLD_ (even empty or text, which glibc ignores) skipped the setting,
    leaving glibc's dynamic threshold: the freed 1 MiB blocks stayed in the heap. Now the setting applies."""
    applied, freed_kib = _run(_MMAP, "131072", env={"MALLOC_MMAP_THRESHOLD_": value}).split()
    assert applied == "True" and int(freed_kib) > 48 * 1024


def test_which_environment_values_are_a_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, kept in [
        ("8388608", True),
        (" 8388608", True),
        ("0x800000", True),
        ("040000000", True),
        ("0", True),
        (str(32 << 20), True),
        (str((32 << 20) + 1), False),
        ("", False),
        ("abc", False),
        ("-1", False),
        ("8388608x", False),
        ("09", False),
    ]:
        monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", value)
        assert malloc._env_mmap_threshold() is kept, value
