"""A twin state cut short (a torn write, a bad copy) is refused even when the cut falls in the xz stream's index or
footer, after every byte of the payload: the reader requires the stream's end, and nothing after it."""

from __future__ import annotations

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
    with pytest.raises(TwinStoreError, match=r"truncated|shorter"):
        TwinEngine(prior).decode(data[:-cut], MAX_BYTES)


@pytest.mark.parametrize("tail", [b"\0", b"\0" * 4, b"junk after the stream"])
def test_a_state_with_data_after_its_compressed_stream_is_refused(
    state: tuple[GlobalPrior, bytes], tail: bytes
) -> None:
    prior, data = state
    with pytest.raises(TwinStoreError, match="after the compressed payload"):
        TwinEngine(prior).decode(data + tail, MAX_BYTES)
