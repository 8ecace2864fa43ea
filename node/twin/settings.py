"""The ``[twin]`` config section: the personal model, its storage bound and the learning governor."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from node.errors import ConfigError
from node.schema import setting as _setting


@dataclass(frozen=True, slots=True)
class TwinSettings:
    SECTION: ClassVar[str] = "twin"

    enabled: bool = _setting(True, "Run the twin: learn from what this node's user does, suggest words and actions.")
    max_disk_bytes: int = _setting(
        10_000_000,
        "Bound on the twin's state file, in bytes (the shipped prior is not counted); the rarest personal "
        "n-grams are dropped to stay under it.",
        min=100_000,
        max=100_000_000,
    )
    max_personal_words: int = _setting(
        50_000, "Most words of the user's own (not in the prior) the model keeps.", min=100, max=1_000_000
    )
    neural: bool = _setting(True, "Use the neural tier when its model file is installed.")
    gate_fraction: float = _setting(
        0.5,
        "Message gate: about this fraction of the hidden-layer step's compute (a message costs its tokens + 4; a "
        "message adapts the neural tier on its first 128 tokens only, so a longer one costs 128 + 4) adapts the "
        "neural tier, whole messages, those where the neural tier beat the mixture most per unit of compute "
        "(adaptive threshold; 0.5 chosen on tuning senders, see bench/README.md).",
        min=0.01,
        max=1.0,
    )
    blas_threads: int = _setting(
        1,
        "Threads of numpy's BLAS pool, set when the twin loads (the whole process has one pool; the twin's "
        "small matrices are fastest on one thread, most of all on a busy device); 0 leaves it as it is.",
        min=0,
        max=64,
    )
    actions: bool = _setting(True, "Learn the next-action head (needs the MiniLM model of the knowledge base).")
    min_battery_percent: int = _setting(
        30, "Learning pauses on battery below this level, in percent (not when charging).", min=0, max=100
    )
    require_charging: bool = _setting(False, "Learn only on external power.")
    max_temp_c: float = _setting(
        45.0, "Learning pauses above this temperature (hottest thermal zone), °C.", min=0, max=150
    )
    cpu_budget_s_per_hour: float = _setting(
        60.0, "CPU seconds learning may use per hour (sliding window).", min=0.1, max=3600
    )
    poll_interval_s: float = _setting(60.0, "How often battery and temperature are read, in seconds.", min=1, max=3600)
    save_interval_s: float = _setting(
        60.0, "Learned state is written at most this often, in seconds.", min=1, max=86400
    )
    max_deferred_events: int = _setting(
        1000, "Events kept while learning is paused (oldest dropped beyond this).", min=1, max=1_000_000
    )
    max_deferred_bytes: int = _setting(
        1_048_576, "Bytes of event text kept while learning is paused.", min=1024, max=1 << 30
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            lo, hi = f.metadata.get("min"), f.metadata.get("max")
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ConfigError(f"twin.{f.name} must be between {lo:g} and {hi:g}, got {value!r}")
