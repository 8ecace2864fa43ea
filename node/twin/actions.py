"""The next-action head: which command or tool the user is likely to use next.

An online multinomial logistic regression over ``[MiniLM embedding of the last event's text ; one-hot of the
last action]``, learned by SGD after each prediction (so every event first yields a surprisal in bits). The
embedding comes from the node's own model (:mod:`node.rag.embed`, 384 dimensions); the head only sees
vectors, so it is pure numpy. Bounded: at most ``max_actions`` distinct actions (later new ones are not
learned), weights ``max_actions x (dim + max_actions)`` float32.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from node.twin.errors import TwinStoreError

LEARNING_RATE = 0.5
MAX_ACTION_CHARS = 64
MAX_EVENTS = 2**62  # a saved event count above this is not a real one (store.MAX_META_INT)
DIM = 384  # the embedding's dimensions (MiniLM)
MAX_ACTIONS = 128  # distinct actions learned at most
UTF8_MAX_BYTES = 4  # bytes of one character in UTF-8, at most


def names_max_bytes(max_actions: int) -> int:
    """The most bytes the saved action names of ``max_actions`` names may take: each of at most MAX_ACTION_CHARS
    characters of at most 4 bytes, one newline between two."""
    return max_actions * MAX_ACTION_CHARS * UTF8_MAX_BYTES + max(0, max_actions - 1)


def state_max_bytes(dim: int = DIM, max_actions: int = MAX_ACTIONS) -> int:
    """The most bytes :meth:`ActionHead.state` returns (its arrays' payload): float32 weights ``max_actions x
    (dim + max_actions)`` and bias, the names, one int64 event count (293 KiB at the defaults)."""
    return 4 * max_actions * (dim + max_actions) + 4 * max_actions + names_max_bytes(max_actions) + 8


class ActionHead:
    def __init__(self, dim: int = DIM, max_actions: int = MAX_ACTIONS) -> None:
        self.dim = dim
        self.max_actions = max_actions
        self.actions: list[str] = []
        self.index: dict[str, int] = {}
        self.w = np.zeros((max_actions, dim + max_actions), dtype=np.float32)
        self.bias = np.zeros(max_actions, dtype=np.float32)
        self.events = 0

    def _features(self, vec: np.ndarray[Any, Any], prev: str | None) -> np.ndarray[Any, Any]:
        x = np.zeros(self.dim + self.max_actions, dtype=np.float32)
        v = np.asarray(vec, dtype=np.float32).reshape(-1)
        if v.shape != (self.dim,):
            raise TwinStoreError(f"action head expects {self.dim}-dimensional vectors")
        x[: self.dim] = v
        if prev is not None and prev in self.index:
            x[self.dim + self.index[prev]] = 1.0
        return x

    def _probs(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        n = len(self.actions)
        z = self.w[:n] @ x + self.bias[:n]
        z = z - z.max()
        p: np.ndarray[Any, Any] = np.exp(z)
        p /= p.sum()
        return p

    def predict(self, vec: np.ndarray[Any, Any], prev: str | None, k: int = 3) -> list[tuple[str, float]]:
        if not self.actions:
            return []
        p = self._probs(self._features(vec, prev))
        order = np.argsort(-p, kind="stable")[:k]
        return [(self.actions[i], float(p[i])) for i in order]

    def learn(self, vec: np.ndarray[Any, Any], prev: str | None, action: str) -> float | None:
        """Predict ``action``, then take one SGD step towards it; returns the surprisal (bits) before it.

        None when the action is new (a new action has no prediction) or the table is full."""
        action = action[:MAX_ACTION_CHARS]
        x = self._features(vec, prev)
        new = action not in self.index
        if new:
            if len(self.actions) >= self.max_actions:
                return None
            self.index[action] = len(self.actions)
            self.actions.append(action)
        p = self._probs(x)
        t = self.index[action]
        bits = None if new else -math.log2(max(float(p[t]), 1e-12))
        g = p.copy()
        g[t] -= 1.0
        n = len(self.actions)
        self.w[:n] -= LEARNING_RATE * np.outer(g, x).astype(np.float32)
        self.bias[:n] -= LEARNING_RATE * g.astype(np.float32)
        self.events += 1
        return bits

    def state(self) -> dict[str, np.ndarray[Any, Any]]:
        n = len(self.actions)
        return {
            "act_names": np.frombuffer("\n".join(self.actions).encode("utf-8"), dtype=np.uint8),
            "act_w": self.w[:n, : self.dim + n].copy(),
            "act_b": self.bias[:n].copy(),
            "act_events": np.asarray([self.events], dtype=np.int64),
        }

    def load_state(self, arrays: dict[str, np.ndarray[Any, Any]]) -> None:
        if "act_names" not in arrays:
            return
        raw = bytes(arrays["act_names"])
        if raw.count(b"\n") >= self.max_actions:  # before split: a newline is a list entry
            raise TwinStoreError("action head state does not fit this node's settings (too many actions)")
        if len(raw) > names_max_bytes(self.max_actions):  # before decoding: no long string is ever built
            raise TwinStoreError(f"action head state: act_names is {len(raw)} bytes, more than its names can be")
        names = raw.decode("utf-8").split("\n") if raw else []
        longest = max((len(a) for a in names), default=0)
        if longest > MAX_ACTION_CHARS:  # learn() keeps this many: a longer one is planted, and costs every save
            raise TwinStoreError(
                f"action head state: an action name of {longest} characters (at most {MAX_ACTION_CHARS})"
            )
        n = len(names)
        w, b = arrays["act_w"], arrays["act_b"]
        if n > self.max_actions or w.shape != (n, self.dim + n) or b.shape != (n,) or len(set(names)) != n:
            raise TwinStoreError("action head state does not fit this node's settings")
        self.actions = names
        self.index = {a: i for i, a in enumerate(names)}
        self.w[:] = 0
        self.w[:n, : self.dim + n] = w
        self.bias[:] = 0
        self.bias[:n] = b
        if "act_events" in arrays and arrays["act_events"].shape != (1,):  # state() writes one count
            raise TwinStoreError(f"action head state: act_events has shape {arrays['act_events'].shape}, not (1,)")
        events = int(arrays["act_events"][0]) if "act_events" in arrays else 0
        if not 0 <= events <= MAX_EVENTS:  # 2**63 - 1 loaded, and the next action overflowed every save
            raise TwinStoreError("action head state: act_events is not a counter")
        self.events = events
