"""normtext: normalization layers from scratch, checked against PyTorch and MXNet Gluon.

Its rooms, each one kind of thing; imports point down this list only (a test enforces it):

* :mod:`normtext.spec`, :mod:`normtext.errors`, :mod:`normtext.moments`: the
  family as data, input checks with PyTorch's messages, the statistics;
* :mod:`normtext.numpy` (float64 reference with hand-derived backward),
  :mod:`normtext.torch`, :mod:`normtext.mxnet`: the three floors, layers only;
* :mod:`normtext.testing`: the parity harness, tolerances, the registry of
  norms and the numerics study;
* :mod:`normtext.distributed`: the multi-process launcher, its workers and the
  communication cost model;
* :mod:`normtext.bench`, :mod:`normtext.check`: command-line tools (speed, parity);
* :mod:`normtext.experiments`: data, models, training loops, cached runs,
  verdicts and plots of the book's chapters; nothing in the library imports it.

``from normtext import torch as nt`` reads like D2L's ``from d2l import torch as d2l``.
"""
from __future__ import annotations

import importlib.util
import os

__version__ = "0.1.0"


def quick_mode() -> bool:
    """True when ``NORMTEXT_QUICK=1``: experiments shrink so that tests fit CI."""
    return os.environ.get("NORMTEXT_QUICK", "0") not in ("", "0", "false", "False")


def mxnet_available() -> bool:
    """Whether MXNet 1.9.1 can be imported here (Linux x86_64 wheels only)."""
    return importlib.util.find_spec("mxnet") is not None
