"""Working memory: per-client scratch (set/get/list/clear) with a TTL per entry, bounded in bytes per client and
in clients (the least recently active client's scratch is dropped first). Kept in memory only: it is a
session's notepad, gone when the node stops. Time is injected (``now`` in seconds, the node's clock)."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from node.mcp.errors import MemoryFull


@dataclass(slots=True)
class _Entry:
    value: Any
    expires_at: float
    nbytes: int


class WorkingMemory:
    def __init__(self, *, max_bytes_per_client: int, max_clients: int, max_ttl_s: float) -> None:
        self.max_bytes_per_client = max_bytes_per_client
        self.max_clients = max_clients
        self.max_ttl_s = max_ttl_s
        self._clients: OrderedDict[str, dict[str, _Entry]] = OrderedDict()
        self.evicted_clients = 0

    def _scratch(self, client: str, now: float, *, create: bool) -> dict[str, _Entry] | None:
        scratch = self._clients.get(client)
        if scratch is None:
            if not create:
                return None
            scratch = self._clients[client] = {}
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
                self.evicted_clients += 1
        self._clients.move_to_end(client)
        for key in [k for k, e in scratch.items() if e.expires_at <= now]:
            del scratch[key]
        return scratch

    @staticmethod
    def _used(scratch: dict[str, _Entry]) -> int:
        return sum(e.nbytes for e in scratch.values())

    def set(self, client: str, key: str, value: Any, ttl_s: float | None, now: float) -> dict[str, Any]:
        ttl = self.max_ttl_s if ttl_s is None else min(max(ttl_s, 0.001), self.max_ttl_s)
        nbytes = len(key.encode()) + len(json.dumps(value, ensure_ascii=False).encode())
        scratch = self._scratch(client, now, create=True)
        assert scratch is not None
        old = scratch.get(key)
        used = self._used(scratch) - (old.nbytes if old else 0)
        if used + nbytes > self.max_bytes_per_client:
            raise MemoryFull(
                f"working memory is full: {used} of {self.max_bytes_per_client} bytes used, this entry needs "
                f"{nbytes}; clear some keys (scratch_clear)"
            )
        scratch[key] = _Entry(value, now + ttl, nbytes)
        return {"key": key, "bytes": nbytes, "expires_in_s": round(ttl, 3)}

    def get(self, client: str, key: str, now: float) -> dict[str, Any]:
        scratch = self._scratch(client, now, create=False) or {}
        e = scratch.get(key)
        if e is None:
            return {"key": key, "found": False, "value": None}
        return {"key": key, "found": True, "value": e.value, "expires_in_s": round(e.expires_at - now, 3)}

    def list(self, client: str, now: float) -> dict[str, Any]:
        scratch = self._scratch(client, now, create=False) or {}
        keys = [{"key": k, "bytes": e.nbytes, "expires_in_s": round(e.expires_at - now, 3)} for k, e in scratch.items()]
        return {"keys": keys, "bytes": self._used(scratch), "max_bytes": self.max_bytes_per_client}

    def clear(self, client: str, key: str | None, now: float) -> dict[str, Any]:
        scratch = self._scratch(client, now, create=False) or {}
        if key is None:
            n = len(scratch)
            self._clients.pop(client, None)
            return {"cleared": n}
        return {"cleared": 1 if scratch.pop(key, None) is not None else 0}

    def export(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for client in list(self._clients):
            scratch = self._scratch(client, now, create=False) or {}
            out[client] = {k: e.value for k, e in scratch.items()}
        return out

    def forget(self) -> dict[str, int]:
        n = sum(len(s) for s in self._clients.values())
        self._clients.clear()
        return {"entries": n}
