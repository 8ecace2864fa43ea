"""A twin state cut short (a torn write, a bad copy) is refused even when the cut falls in the xz stream's index or
footer, after every byte of the payload: the reader requires the stream's end, and nothing after it. Since state
format 2 (a header with each section's length, then the sections) a file cut or padded as a whole fails the lengths
check first; a section cut or padded inside a file whose header was made to agree still meets the stream check."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from node.twin.engine import Event, TwinEngine
from node.twin.errors import TwinStoreError
from node.twin.prior import GlobalPrior

MAX_BYTES = 10_000_000


@pytest.fixture(scope="module")
def state() -> tuple[GlobalPrior, bytes]:
    prior = GlobalPrior.load_packaged()
    eng = TwinEngine(prior)
    for i in range(20):
        eng.observe(Event("message", f"message {i} about the grobnik project", "messages.send", 0))
    return prior, eng.encode(MAX_BYTES)


def test_a_whole_state_loads(state: tuple[GlobalPrior, bytes]) -> None:
    prior, data = state
    back = TwinEngine(prior)
    back.decode(data, MAX_BYTES)
    assert back.lm.personal.tokens > 0


@pytest.mark.parametrize("cut", [1, 4, 12, 24, 32])
def test_a_state_cut_in_its_compressed_stream_end_is_refused(state: tuple[GlobalPrior, bytes], cut: int) -> None:
    """Review of fix8: a file missing its last bytes (the xz index and footer: every payload byte is still there)
    loaded as if whole."""
    prior, data = state
    with pytest.raises(TwinStoreError, match=r"lengths are not the file's"):
        TwinEngine(prior).decode(data[:-cut], MAX_BYTES)
    with pytest.raises(TwinStoreError, match=r"truncated|shorter"):
        TwinEngine(prior).decode(_with_last_section(data, lambda section: section[:-cut]), MAX_BYTES)


@pytest.mark.parametrize("tail", [b"\0", b"\0" * 4, b"junk after the stream"])
def test_a_state_with_data_after_its_compressed_stream_is_refused(
    state: tuple[GlobalPrior, bytes], tail: bytes
) -> None:
    prior, data = state
    with pytest.raises(TwinStoreError, match=r"lengths are not the file's"):
        TwinEngine(prior).decode(data + tail, MAX_BYTES)
    with pytest.raises(TwinStoreError, match="after the compressed payload"):
        TwinEngine(prior).decode(_with_last_section(data, lambda section: section + tail), MAX_BYTES)


def _with_last_section(data: bytes, change: Callable[[bytes], bytes]) -> bytes:
    """The state file with its last (language-model) section changed and the header's length made to agree."""
    frame = struct.Struct(">4sHII")
    magic, version, light, lm = frame.unpack_from(data)
    assert lm > 0 and frame.size + light + lm == len(data)
    section = change(data[frame.size + light :])
    return frame.pack(magic, version, light, len(section)) + data[frame.size : frame.size + light] + section
