"""The SyncBatchNorm chapter's launch command: `python -m normtext.distributed` under torchrun.

The chapter shows the command instead of running it (a build should not spend
the time); this test runs the single-machine form it describes.
"""
import importlib
import os
import subprocess
import sys

import pytest


def test_torchrun_standalone_two_gloo_processes():
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        pytest.skip("torchrun is not installed beside this Python")
    command = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "normtext.distributed",
               "--backend", "gloo", "normtext.distributed.workers:hello"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    ranks = [line for line in out.stdout.splitlines() if line.startswith("rank")]
    assert len(ranks) == 2, out.stdout
    # hello all-reduces the ranks: 0 + 1 on both processes
    assert all("'sum_of_ranks': 1.0" in line for line in ranks), ranks


class _RecordingStream:
    """A stdout that keeps each write() call apart, to see how a line reaches the pipe."""

    def __init__(self):
        self.writes = []

    def write(self, text):
        self.writes.append(text)
        return len(text)

    def flush(self):
        pass


def test_each_rank_line_reaches_stdout_in_one_write(monkeypatch):
    # Under torchrun every process shares one stdout pipe. A line written in two
    # calls (print writes the text, then "\n") can be split by another process's
    # line when Python runs unbuffered: CI once read "rank 0 ...rank 1 ...\n\n".
    # A single write() of under PIPE_BUF bytes reaches a pipe whole.
    # the package exports the function launch, which hides the module of that name
    launch_module = importlib.import_module("normtext.distributed.launch")

    stream = _RecordingStream()
    monkeypatch.setattr(sys, "stdout", stream)
    assert launch_module.main(["-k", "2", "normtext.distributed.workers:hello"]) == 0
    lines = [w for w in stream.writes if w.strip()]
    assert len(lines) == 2, stream.writes
    assert all(w.startswith("rank") and w.endswith("\n") and len(w.encode()) < 4096
               for w in lines), stream.writes
