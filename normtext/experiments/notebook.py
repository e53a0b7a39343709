"""Show the package's own source in the book, so that book and package never drift apart."""
from __future__ import annotations

import inspect


def show_source(obj, lines: slice | None = None):
    """The source of ``obj`` as a highlighted Markdown code block (Jupyter renders it).

    ``lines`` selects part of it (a slice of source lines).
    """
    from IPython.display import Markdown
    source = inspect.getsource(obj)
    if lines is not None:
        source = "\n".join(source.splitlines()[lines])
    where = f"{inspect.getmodule(obj).__name__}"
    return Markdown(f"From `{where}`:\n\n```python\n{source.rstrip()}\n```")


def environment() -> str:
    """One line with the versions and the device, printed at the top of every chapter."""
    import platform
    import numpy as np
    import torch
    from normtext import __version__, mxnet_available
    parts = [f"python {platform.python_version()}", f"numpy {np.__version__}",
             f"torch {torch.__version__}"]
    if mxnet_available():
        import mxnet as mx
        parts.append(f"mxnet {mx.__version__}")
    else:
        parts.append("mxnet not installed (Linux x86_64 only): MXNet cells are skipped")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return f"normtext {__version__} | " + " | ".join(parts) + f" | device: {device}"
