"""Where a result came from: the machine, the versions, the device and the date.

:func:`environment` returns it as a dict (the benchmark writes it beside its
numbers, the parity check prints it); :func:`environment_line` formats it as
the one line every chapter of the book prints at its top. Neither imports
MXNet: its version is read from the installed package's metadata, so a
missing or broken MXNet does not stop a PyTorch-only run.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from importlib import metadata
from typing import Optional

import numpy as np
import torch

from normtext import __version__

__all__ = ["environment", "environment_line"]

MXNET_MISSING = "mxnet not installed (Linux x86_64 only): MXNet cells are skipped"


def _installed(distribution: str) -> Optional[str]:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _nvidia_driver() -> Optional[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def environment(device: Optional[str] = None) -> dict:
    """Provenance of a run on ``device``: machine, versions, date (and the GPU's, on CUDA).

    ``device`` defaults to CUDA when PyTorch sees a GPU, else the CPU.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    env = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "normtext": __version__, "python": platform.python_version(),
           "numpy": np.__version__, "torch": torch.__version__, "mxnet": _installed("mxnet"),
           "device": str(device), "host": platform.node(), "platform": platform.platform(),
           "cpu": platform.processor() or platform.machine(),
           "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    if str(device).startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        env.update({"gpu": torch.cuda.get_device_name(torch.device(device)),
                    "gpu_memory_bytes": props.total_memory,
                    "compute_capability": f"{props.major}.{props.minor}",
                    "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                    "driver": _nvidia_driver()})
    return env


def environment_line(env: Optional[dict] = None) -> str:
    """One line with the versions and the device (``env`` defaults to :func:`environment`)."""
    env = environment() if env is None else env
    mxnet = f"mxnet {env['mxnet']}" if env.get("mxnet") else MXNET_MISSING
    threads = env["torch_threads"]
    device = env.get("gpu") or f"CPU ({env['cpu']}, {threads} thread{'s' if threads != 1 else ''})"
    return (f"normtext {env['normtext']} | python {env['python']} | numpy {env['numpy']} | "
            f"torch {env['torch']} | {mxnet} | device: {device}")
