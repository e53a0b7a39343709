"""normtext's MXNet Gluon floor: from-scratch Blocks mirroring ``mxnet.gluon.nn``.

MXNet is retired (Apache Attic) and its wheels exist for Linux x86_64 only;
importing this module elsewhere raises ImportError with that explanation.
Use :func:`normtext.mxnet_available` to test first.
"""
try:
    import mxnet  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the platform
    raise ImportError(
        "normtext.mxnet needs mxnet==1.9.1, which ships wheels for Linux x86_64 only; "
        f"the MXNet parts of normtext are unavailable here ({e})") from e

from .batch_norm import BatchNorm
from .group_norm import GroupNorm
from .instance_norm import InstanceNorm
from .layer_norm import LayerNorm
from .lrn import lrn

__all__ = ["BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm", "lrn"]
