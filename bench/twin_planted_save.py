"""A planted twin state (review of lazy8, MEDIUM 1): the CPU of a service's first and second save after reading it.

    PYTHONPATH=$PWD python bench/twin_planted_save.py PLANTED_FILE MAX_DISK_BYTES

The planted file: /tmp/review-lazy8/plant.py (an unknown array of slowly compressible bytes, up to the raw bound).
Run it with this tree and with the tree before the fix (PYTHONPATH) for the ratio."""

import resource
import sys
import tempfile
import time
from pathlib import Path

import trio

from tests.twin.test_lazy_lm import _service


async def main(tmp: Path, planted: bytes, bound: int) -> None:
    (tmp / "twin").mkdir(mode=0o700)
    (tmp / "twin" / "state.bin").write_bytes(planted)
    svc = _service(tmp, max_disk_bytes=bound)
    async with trio.open_nursery() as n:
        await n.start(svc.run, None)
        svc.record("command", "", action="node.status")
        await svc.wait_learned(1)
        t = time.process_time()
        size = await svc.save_now()
        cpu = time.process_time() - t
        st = await svc.status()
        loaded = st["language_model"]["loaded"]
        print(f"first save: {cpu:.1f} s CPU, file {len(planted)} -> {size} bytes, model loaded={loaded}")
        t = time.process_time()
        svc.record("command", "", action="rag.stats")
        await svc.wait_learned(2)
        size = await svc.save_now()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(f"second save: {time.process_time() - t:.2f} s CPU, {size} bytes; peak RSS {peak} MiB")
        n.cancel_scope.cancel()


if __name__ == "__main__":
    data = Path(sys.argv[1]).read_bytes()
    with tempfile.TemporaryDirectory() as d:
        trio.run(main, Path(d), data, int(sys.argv[2]))
