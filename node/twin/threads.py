"""The BLAS thread pool of the twin's process.

The twin's matrices are small (a 4,096 x 128 output layer): OpenBLAS's helper threads only wait for each other,
and on a busy device they spin for the CPU the learner itself needs (``bench/twin_blas.py`` measures it under
contention). OpenBLAS has one pool per process and reads ``OPENBLAS_NUM_THREADS`` only when numpy is first
imported, long before the twin loads, so the service caps the pool at run time with threadpoolctl when it loads
the engine (``[twin] blas_threads``; 0 leaves it alone). The cap holds for the whole process: the knowledge
base's heavy work runs in onnxruntime and hnswlib, which keep their own thread settings.
"""

from __future__ import annotations

from threadpoolctl import threadpool_info, threadpool_limits


def limit_blas_threads(n: int) -> int | None:
    """Cap every loaded BLAS library's pool at ``n`` threads; returns the cap, or None when ``n`` <= 0 (left
    alone)."""
    if n <= 0:
        return None
    threadpool_limits(limits=n, user_api="blas")
    return n


def blas_threads() -> list[int]:
    """The thread count of every loaded BLAS library."""
    return [int(i["num_threads"]) for i in threadpool_info() if i.get("user_api") == "blas"]
