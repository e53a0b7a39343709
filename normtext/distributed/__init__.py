"""Several processes on one machine: the launcher, the functions its workers run, and costs.

* :mod:`normtext.distributed.launch`: :func:`launch` runs a function in k local
  processes with ``torch.distributed`` set up (``python -m normtext.distributed``
  is its command line, which also runs under ``torchrun``);
* :mod:`normtext.distributed.workers`: the functions those processes run
  (SyncBatchNorm's equivalence proof, all-reduce timings);
* :mod:`normtext.distributed.gluon_sync`: MXNet's contrib SyncBatchNorm on CPU
  contexts, run in a subprocess;
* :mod:`normtext.distributed.comm_cost`: the alpha-beta cost model of an all-reduce.
"""
from .launch import LaunchError, LaunchTimeout, WorkerError, launch, resolve

__all__ = ["launch", "resolve", "LaunchError", "LaunchTimeout", "WorkerError"]
