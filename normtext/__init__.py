"""normtext: normalization layers from scratch, checked against PyTorch and MXNet Gluon.

The package has three floors, each using only those below it:

* :mod:`normtext.spec` and :mod:`normtext.errors`: the family as data, and
  input checks with PyTorch's messages;
* :mod:`normtext.numpy` (float64 reference), :mod:`normtext.torch`,
  :mod:`normtext.mxnet`: three implementations that read the specs;
* :mod:`normtext.compare`, :mod:`normtext.train`, :mod:`normtext.plot`,
  :mod:`normtext.bench`, :mod:`normtext.check`: the harness, training loops,
  figures and command-line tools the book uses.

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
