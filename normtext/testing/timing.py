"""Wall-clock timing for the benchmark, the chapters and the distributed workers.

On a shared machine other processes only ever *add* time, so the helpers take
the least disturbed measurement of a block of calls (:func:`best_of`) and
describe a series of such measurements by its quartiles (:func:`quartiles`),
not by a mean. A ``sync`` callable waits for queued work before the clock is
read (``torch.cuda.synchronize`` on a GPU, ``mx.nd.waitall`` for MXNet's
asynchronous engine, nothing on a PyTorch CPU tensor).
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ["sync_for", "per_call", "best_of", "calibrate", "quartiles", "repeat", "measure",
           "interleaved"]


def _no_sync() -> None:
    return None


def sync_for(device: str) -> Callable[[], None]:
    """The function that waits for ``device``'s queued work: CUDA's synchronize, else nothing."""
    return torch.cuda.synchronize if str(device).startswith("cuda") else _no_sync


def per_call(fn: Callable, number: int, sync: Callable = _no_sync) -> float:
    """Seconds per call of ``fn``, averaged over ``number`` calls between two syncs."""
    sync()
    start = time.perf_counter()
    for _ in range(number):
        fn()
    sync()
    return (time.perf_counter() - start) / number


def best_of(fn: Callable, number: int, sync: Callable = _no_sync, blocks: int = 3) -> float:
    """One round: the fastest of ``blocks`` measurements of ``number`` calls each.

    Another process can take the core for a while; the fastest block of a
    round is the one it disturbed least. The rounds' median and quartiles then
    describe what remains.
    """
    return min(per_call(fn, number, sync) for _ in range(blocks))


def calibrate(fn: Callable, sync: Callable = _no_sync, min_time: float = 0.02) -> int:
    """How many calls make one measurement last at least ``min_time`` seconds (after a warm-up)."""
    fn()
    fn()  # warm up: allocator, caches, lazy initialisation
    t = per_call(fn, 1, sync)
    return max(1, math.ceil(min_time / max(t, 1e-7)))


def quartiles(values: Sequence[float]) -> Tuple[float, float, float]:
    """``(q1, median, q3)`` of the values (inclusive method; one value is its own quartiles)."""
    if len(values) == 0:
        raise ValueError("quartiles of no values")
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def repeat(fn: Callable, repeats: int, *, warmup: int = 1, sync: Callable = _no_sync,
           before_each: Optional[Callable[[], None]] = None) -> List[float]:
    """Seconds of each of ``repeats`` single calls of ``fn``, after ``warmup`` untimed calls.

    ``before_each`` runs, untimed, before every timed call (a barrier, so that
    every process of a collective starts together).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if before_each is not None:
            before_each()
        times.append(per_call(fn, 1, sync))
    return times


def measure(fn: Callable, *, repeats: int = 5, min_time: float = 0.02,
            sync: Callable = _no_sync) -> Tuple[float, float, float]:
    """Quartiles of the seconds per call of ``fn`` over ``repeats`` rounds of :func:`best_of`.

    Each round's block of calls lasts at least ``min_time / 3`` seconds.
    """
    number = calibrate(fn, sync, min_time / 3)
    return quartiles([best_of(fn, number, sync) for _ in range(repeats)])


def interleaved(calls: Dict[str, Callable], repeats: int, sync: Callable = _no_sync,
                min_time: float = 0.02) -> Tuple[Dict[str, List[float]], Dict[str, int]]:
    """``repeats`` rounds of :func:`best_of` for several functions, the order rotated every round.

    Timing the competitors side by side, round after round, exposes them to
    the same disturbances; rotating the order keeps any one of them from
    always running first (after a pause) or last. Returns the seconds per call
    of each round, by name, and the calls per block (each block lasts at least
    ``min_time / 3``).
    """
    numbers = {name: calibrate(call, sync, min_time / 3) for name, call in calls.items()}
    times: Dict[str, List[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(best_of(calls[name], numbers[name], sync))
    return times, numbers
