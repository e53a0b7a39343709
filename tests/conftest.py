import numpy as np
import pytest

# Every input rank PyTorch's BatchNorm modules accept, with the module that accepts it.
BN_SHAPES = [(8, 3), (4, 3, 7), (4, 3, 5, 6), (2, 3, 3, 4, 5)]


@pytest.fixture
def rng():
    return np.random.default_rng(0)
