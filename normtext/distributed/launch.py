"""Run a function in k processes on this machine, each with ``torch.distributed`` set up.

:func:`launch` is what ``torchrun --standalone --nproc-per-node k`` does, as a
function a notebook can call::

    from normtext.distributed import launch
    results = launch(normtext.distributed.workers.all_reduce_timing, world_size=2, args=(...))

It starts ``world_size`` processes with ``torch.multiprocessing``'s *spawn*
method, gives them a rendezvous on a free loopback port (a
``torch.distributed.TCPStore`` owned by the calling process, so no other
program can take the port between choosing and using it), calls
``fn(*args, **kwargs)`` in each after ``init_process_group`` and returns the
list of their return values, ordered by rank. The function must be importable
(a module-level function of an installed package: spawned processes import it
by name); inside it, ``torch.distributed.get_rank()`` says which process it is.

Failure is reported, never waited out:

* a worker that raises: :class:`WorkerError` with its traceback;
* a worker that dies (killed by a signal, ``os._exit``, out of memory):
  :class:`WorkerError` naming the rank, pid and signal;
* no results within ``timeout`` seconds: :class:`LaunchTimeout`.

In every case the other workers are terminated (then killed), joined, and the
port is released before the exception propagates.

From the command line, the same functions run locally::

    python -m normtext.distributed -k 2 normtext.distributed.workers:hello

or, unchanged, under ``torchrun`` on several machines (each process of
``torchrun`` runs the function once; see the SyncBatchNorm chapter)::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29400 -m normtext.distributed --backend nccl \\
        normtext.distributed.workers:hello
"""
from __future__ import annotations

import argparse
import importlib
import os
import queue as queue_module
import signal
import sys
import time
import traceback
from datetime import timedelta
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["launch", "WorkerError", "LaunchTimeout", "LaunchError", "resolve"]

HOST = "127.0.0.1"


class LaunchError(RuntimeError):
    """A launched run failed; ``pids`` are the worker processes (all gone by now), ``port`` the store's."""

    def __init__(self, message: str, *, rank: Optional[int] = None,
                 pids: Sequence[int] = (), port: Optional[int] = None):
        super().__init__(message)
        self.rank, self.pids, self.port = rank, list(pids), port


class WorkerError(LaunchError):
    """A worker raised an exception or died."""


class LaunchTimeout(LaunchError, TimeoutError):
    """The workers did not all return within the timeout."""


def resolve(target: str) -> Callable:
    """``"package.module:function"`` -> the function."""
    module, _, name = target.partition(":")
    if not name:
        raise ValueError(f"expected 'module:function', got {target!r}")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _check_importable(fn: Callable) -> None:
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module in (None, "__main__", "__mp_main__") or "<" in qualname:
        raise ValueError(
            f"{fn!r} cannot be launched: spawned workers import the function by name, so it "
            "must be a module-level function of an importable module (not defined in a "
            "notebook or script, not a lambda or closure)")


def _describe_exit(exitcode: Optional[int]) -> str:
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name} (exit code {exitcode})"
    return f"exited with code {exitcode} without returning a result"


def _worker(rank: int, world_size: int, port: int, backend: str, fn: Callable, args, kwargs,
            results, threads: Optional[int], timeout: float) -> None:
    """The body of one spawned process: rendezvous, run ``fn``, send back its result."""
    os.environ.update({"MASTER_ADDR": HOST, "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world_size)})
    if threads:
        torch.set_num_threads(threads)
    code = 0
    try:
        if backend == "nccl":
            torch.cuda.set_device(rank % torch.cuda.device_count())
        store = dist.TCPStore(HOST, port, world_size, is_master=False,
                              timeout=timedelta(seconds=timeout))
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout))
        value = fn(*args, **kwargs)
        results.put(("ok", rank, value))
        dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - everything goes back to the parent
        results.put(("error", rank, traceback.format_exc()))
        code = 1
    results.close()
    results.join_thread()   # the message is in the pipe before this process ends
    sys.exit(code)


def launch(fn: Callable, world_size: int = 2, args: Sequence[Any] = (),
           kwargs: Optional[Dict[str, Any]] = None, *, backend: str = "gloo",
           timeout: float = 120.0, threads: Optional[int] = 1,
           grace: float = 3.0) -> List[Any]:
    """Run ``fn(*args, **kwargs)`` in ``world_size`` processes; return their results by rank.

    Args:
        fn: a module-level function of an importable module.
        world_size: the number of processes ``k``.
        args, kwargs: passed to ``fn`` in every process (picklable).
        backend: ``"gloo"`` (CPU tensors) or ``"nccl"`` (one GPU per process).
        timeout: seconds for the whole run, including start-up; also the
            timeout of every collective operation inside the workers.
        threads: ``torch.set_num_threads`` in each worker (``None``: PyTorch's
            default; on a small machine k workers with all threads each oversubscribe).
        grace: seconds a worker gets to exit after SIGTERM before SIGKILL.

    Raises:
        WorkerError: a worker raised (its traceback is in the message) or died.
        LaunchTimeout: not every worker returned within ``timeout``.
    """

    _check_importable(fn)
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    ctx = mp.get_context("spawn")
    # the rendezvous store lives here, on a port the OS picks: no race for a free port
    store = dist.TCPStore(HOST, 0, world_size, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=timeout))
    port = store.port
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, daemon=True, name=f"normtext-worker-{rank}",
                         args=(rank, world_size, port, backend, fn, tuple(args),
                               dict(kwargs or {}), results, threads, timeout))
             for rank in range(world_size)]
    values: Dict[int, Any] = {}
    errors: Dict[int, str] = {}
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.start()
        pids = [p.pid for p in procs]

        def receive(wait: float) -> None:
            try:
                kind, rank, value = results.get(timeout=wait)
            except queue_module.Empty:
                return
            (errors if kind == "error" else values)[rank] = value

        def failed() -> bool:
            return bool(errors) or any(p.exitcode is not None and r not in values
                                       for r, p in enumerate(procs))

        while len(values) < world_size:
            receive(0.05)
            if failed():
                # let the picture settle: a worker's message may still be in the pipe, and
                # when one worker dies its peers fail a moment later with connection errors
                end = time.monotonic() + 1.5
                while time.monotonic() < end and len(values) + len(errors) < world_size:
                    receive(0.05)
                if failed():   # not just a worker that ended before its result was read
                    raise _failure(procs, pids, values, errors, port)
            if time.monotonic() > deadline:
                missing = sorted(set(range(world_size)) - set(values))
                raise LaunchTimeout(
                    f"workers {missing} of {world_size} did not return within {timeout:g} s; "
                    "all workers were stopped", pids=pids, port=port)
        return [values[rank] for rank in range(world_size)]
    finally:
        _stop(procs, grace)
        results.close()
        results.cancel_join_thread()
        del store  # closes the listening socket: the port is free again


def _failure(procs, pids, values, errors, port) -> WorkerError:
    """One exception that names the root cause first: a worker that died, else one that raised."""
    world_size = len(procs)
    dead = [r for r, p in enumerate(procs)
            if p.exitcode is not None and r not in values and r not in errors]
    lines = [f"worker {r} of {world_size} (pid {pids[r]}) {_describe_exit(procs[r].exitcode)}"
             for r in dead]
    for r, tb in sorted(errors.items()):
        last = tb.strip().splitlines()[-1]
        lines.append(f"worker {r} of {world_size} (pid {pids[r]}) raised {last}")
    root = dead[0] if dead else min(errors)
    message = "; ".join(lines) + "; the other workers were stopped"
    if root in errors:
        message += f"\n\ntraceback of worker {root}:\n{errors[root]}"
    return WorkerError(message, rank=root, pids=pids, port=port)


def _stop(procs, grace: float) -> None:
    """SIGTERM every live worker, SIGKILL those still alive after ``grace`` s, reap all."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    end = time.monotonic() + grace
    for p in procs:
        if p.pid is not None:
            p.join(max(0.0, end - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()


def _write_line(line: str) -> None:
    # torchrun's processes share one stdout pipe. print() writes the text and the
    # newline in two calls, so under unbuffered output another process's line can
    # land between them; one write() of under PIPE_BUF bytes reaches a pipe whole.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m normtext.distributed",
        description="Run module:function in k local processes (or once per torchrun process).")
    parser.add_argument("target", help="the function, as package.module:function")
    parser.add_argument("-k", "--nproc", type=int, default=2, help="processes to start locally")
    parser.add_argument("--backend", default=None, help="gloo (CPU) or nccl (GPU); default: "
                        "nccl when CUDA is available under torchrun, else gloo")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--threads", type=int, default=1)
    opts = parser.parse_args(argv)
    fn = resolve(opts.target)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        # started by torchrun: the process group is ours to create, from its environment
        backend = opts.backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend, timeout=timedelta(seconds=opts.timeout))
        value = fn()
        _write_line(f"rank {dist.get_rank()} of {dist.get_world_size()}: {value}")
        dist.destroy_process_group()
        return 0
    values = launch(fn, opts.nproc, backend=opts.backend or "gloo", timeout=opts.timeout,
                    threads=opts.threads)
    for rank, value in enumerate(values):
        _write_line(f"rank {rank} of {opts.nproc}: {value}")
    return 0

