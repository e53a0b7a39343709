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

__all__ = ["BatchNorm"]

from .layer_norm import LayerNorm  # noqa: E402
__all__ += ["LayerNorm"]

from .group_norm import GroupNorm  # noqa: E402  (issue 4)
from .instance_norm import InstanceNorm  # noqa: E402
from .lrn import lrn  # noqa: E402
__all__ += ["InstanceNorm", "GroupNorm", "lrn"]
