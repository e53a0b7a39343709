"""The SyncBatchNorm chapter's launch command: `python -m normtext.distributed` under torchrun.

The chapter shows the command instead of running it (a build should not spend
the time); this test runs the single-machine form it describes.
"""
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
