"""The specs decide the axes every implementation reduces over: check them against the definitions."""
import numpy as np
import pytest

from normtext import spec


@pytest.mark.parametrize("shape, axes", [((8, 3), (0,)), ((8, 3, 5), (0, 2)),
                                         ((8, 3, 5, 6), (0, 2, 3)), ((2, 3, 4, 5, 6), (0, 2, 3, 4))])
def test_batch_norm_reduces_over_batch_and_space(shape, axes):
    assert spec.BATCH_NORM.reduce_axes(len(shape), 1) == axes
    assert spec.BATCH_NORM.param_shape(shape) == tuple(n if i == 1 else 1 for i, n in enumerate(shape))
    assert spec.BATCH_NORM.reduction_size(shape) == int(np.prod(shape)) // shape[1]


def test_layer_norm_reduces_over_trailing_axes():
    assert spec.LAYER_NORM.reduce_axes(4, 3) == (1, 2, 3)
    assert spec.LAYER_NORM.reduce_axes(3, 1) == (2,)
    assert spec.LAYER_NORM.param_shape((8, 6, 4, 4), k=2) == (1, 1, 4, 4)


def test_instance_and_group_norm_axes():
    assert spec.INSTANCE_NORM.reduce_axes(4, 1) == (2, 3)
    assert spec.INSTANCE_NORM.stats_shape((8, 6, 4, 4)) == (8, 6, 1, 1)
    assert spec.GROUP_NORM.grouped and spec.GROUP_NORM.reduce_axes(3, 1) == (2,)


def test_family_table_counts_elements_per_statistic():
    rows = {r["norm"]: r for r in spec.family_table((8, 6, 4, 4), groups=2, k=3)}
    assert rows["BatchNorm"]["elements per statistic"] == 8 * 16
    assert rows["LayerNorm"]["elements per statistic"] == 6 * 16
    assert rows["InstanceNorm"]["elements per statistic"] == 16
    assert rows["GroupNorm"]["elements per statistic"] == 3 * 16
    assert rows["LocalResponseNorm"]["gamma/beta shape"] == "none"
    assert rows["LocalResponseNorm"]["elements per statistic"] == "window: size ≤ 6"
    assert {r["norm"] for r in rows.values()} >= {"BatchNorm", "LayerNorm", "InstanceNorm",
                                                  "GroupNorm", "SyncBatchNorm", "LocalResponseNorm"}
