"""What the PyTorch floor refuses and what it accepts, side by side, against torch.nn.

REFUSAL: every input PyTorch refuses, normtext refuses with the same exception
type and (where PyTorch's wording is stable) the same message, before any
arithmetic, and a refused call leaves a layer's state as it was.

ACCEPTANCE: every input PyTorch accepts at the edges (a batch of one with
spatial axes in BatchNorm training, one element per row or group, one channel,
empty batches, evaluation on a single sample, every supported rank, float64,
float32, float16 and bfloat16) normtext accepts too, and agrees with PyTorch on
the output, the input and parameter gradients and the buffers afterwards.

A check that refuses valid input (say, BatchNorm refusing every batch of one
sample) fails the acceptance table; a check that lets invalid input through
fails the refusal table.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

from normtext import torch as nt
from normtext.testing.compare import tolerance

THEIRS = SimpleNamespace(F=TF, nn=nn, name="torch")
OURS = SimpleNamespace(F=nt.functional, nn=nt, name="normtext")

# --- REFUSAL --------------------------------------------------------------------------------

X3, X4 = torch.randn(2, 3, 4), torch.randn(2, 6, 4, 4)
RM, RV = torch.zeros(3), torch.ones(3)

# name -> a call on either namespace (m.F: the functional module, m.nn: the layers)
REFUSED = {
    # BatchNorm: torch.nn.functional.batch_norm
    "batch_norm: one value per channel": lambda m: m.F.batch_norm(
        torch.randn(1, 3), RM, RV, training=True),
    "batch_norm: one value per channel, 4D": lambda m: m.F.batch_norm(
        torch.randn(1, 3, 1, 1), RM, RV, training=True),
    "batch_norm: running_mean size": lambda m: m.F.batch_norm(
        torch.randn(4, 3), torch.zeros(4), RV, training=True),
    "batch_norm: running_var size": lambda m: m.F.batch_norm(
        torch.randn(4, 3), RM, torch.ones(2), training=True),
    "batch_norm: weight size": lambda m: m.F.batch_norm(
        torch.randn(4, 3), RM, RV, weight=torch.ones(4), training=True),
    "batch_norm: bias size": lambda m: m.F.batch_norm(
        torch.randn(4, 3), RM, RV, bias=torch.ones(2), training=True),
    "batch_norm: running stats checked before weight and bias": lambda m: m.F.batch_norm(
        torch.randn(4, 3), torch.zeros(4), torch.ones(4), torch.ones(4), torch.ones(4), True),
    "batch_norm: integer input": lambda m: m.F.batch_norm(
        torch.randint(0, 5, (4, 3)), RM, RV, training=True),
    "batch_norm: eps zero in training": lambda m: m.F.batch_norm(
        torch.randn(4, 3), RM, RV, training=True, eps=0.0),
    "batch_norm: eps negative in eval": lambda m: m.F.batch_norm(
        torch.randn(4, 3), RM, RV, training=False, eps=-1.0),
    "batch_norm: no running stats in eval": lambda m: m.F.batch_norm(
        torch.randn(4, 3), None, None, training=False),
    # BatchNorm modules
    "BatchNorm1d: 4D input": lambda m: m.nn.BatchNorm1d(3)(torch.randn(4, 3, 2, 2)),
    "BatchNorm2d: 3D input": lambda m: m.nn.BatchNorm2d(3)(torch.randn(4, 3, 2)),
    "BatchNorm3d: 4D input": lambda m: m.nn.BatchNorm3d(3)(torch.randn(4, 3, 2, 2)),
    "BatchNorm2d: channel mismatch": lambda m: m.nn.BatchNorm2d(4)(torch.randn(2, 3, 2, 2)),
    "BatchNorm1d: batch of one without length": lambda m: m.nn.BatchNorm1d(3)(torch.randn(1, 3)),
    "BatchNorm2d: no running stats, one value in eval": lambda m: m.nn.BatchNorm2d(
        3, track_running_stats=False).eval()(torch.randn(1, 3, 1, 1)),
    # SyncBatchNorm
    "SyncBatchNorm: 1D input": lambda m: m.nn.SyncBatchNorm(3)(torch.randn(3)),
    "SyncBatchNorm: no channels": lambda m: m.nn.SyncBatchNorm(0)(torch.randn(2, 0, 4)),
    # LayerNorm and RMSNorm: torch.nn.functional.layer_norm / rms_norm
    "layer_norm: normalized_shape does not match": lambda m: m.F.layer_norm(X3, (3,)),
    "layer_norm: normalized_shape longer than input": lambda m: m.F.layer_norm(X3, (1, 2, 3, 4)),
    "layer_norm: empty normalized_shape": lambda m: m.F.layer_norm(X3, ()),
    "layer_norm: 0D input": lambda m: m.F.layer_norm(torch.tensor(1.0), ()),
    "layer_norm: 1D input of the wrong size": lambda m: m.F.layer_norm(torch.randn(5), (4,)),
    "layer_norm: negative size": lambda m: m.F.layer_norm(X3, (-4,)),
    "layer_norm: int normalized_shape": lambda m: m.F.layer_norm(X3, 4),
    "layer_norm: str normalized_shape": lambda m: m.F.layer_norm(X3, "4"),
    "layer_norm: float in normalized_shape": lambda m: m.F.layer_norm(X3, (4.0,)),
    "layer_norm: weight of the wrong shape": lambda m: m.F.layer_norm(X3, (4,), torch.ones(3)),
    "layer_norm: weight of the right size, wrong shape": lambda m: m.F.layer_norm(
        X3, (3, 4), torch.ones(12)),
    "layer_norm: bias of the wrong shape": lambda m: m.F.layer_norm(
        X3, (4,), None, torch.ones(1, 4)),
    "layer_norm: weight checked before the input": lambda m: m.F.layer_norm(
        X3, (3,), torch.ones(5)),
    "layer_norm: integer input": lambda m: m.F.layer_norm(torch.ones(2, 4, dtype=torch.long), (4,)),
    "layer_norm: bool input": lambda m: m.F.layer_norm(torch.ones(2, 4, dtype=torch.bool), (4,)),
    "rms_norm: normalized_shape does not match": lambda m: m.F.rms_norm(X3, (3,)),
    "rms_norm: normalized_shape longer than input": lambda m: m.F.rms_norm(X3, (1, 2, 3, 4)),
    "rms_norm: empty normalized_shape": lambda m: m.F.rms_norm(X3, ()),
    "rms_norm: 1D input of the wrong size": lambda m: m.F.rms_norm(torch.randn(5), (4,)),
    "rms_norm: int normalized_shape": lambda m: m.F.rms_norm(X3, 4),
    "rms_norm: weight of the wrong shape": lambda m: m.F.rms_norm(X3, (4,), torch.ones(1, 4)),
    "rms_norm: weight checked before the input": lambda m: m.F.rms_norm(
        X3, (1, 2, 3, 4), torch.ones(5)),
    "rms_norm: integer input": lambda m: m.F.rms_norm(torch.ones(2, 4, dtype=torch.long), (4,)),
    "LayerNorm: wrong trailing size": lambda m: m.nn.LayerNorm(4)(torch.randn(2, 3)),
    "RMSNorm: wrong trailing size": lambda m: m.nn.RMSNorm(4)(torch.randn(2, 3)),
    # InstanceNorm: torch.nn.functional.instance_norm
    "instance_norm: one spatial element": lambda m: m.F.instance_norm(torch.randn(2, 3, 1, 1)),
    "instance_norm: 2D input": lambda m: m.F.instance_norm(torch.randn(2, 3)),
    "instance_norm: eval without running stats": lambda m: m.F.instance_norm(
        X4, use_input_stats=False),
    "instance_norm: eval with running_mean only": lambda m: m.F.instance_norm(
        X4, torch.zeros(6), None, use_input_stats=False),
    "instance_norm: weight size": lambda m: m.F.instance_norm(X4, weight=torch.ones(5)),
    "instance_norm: bias size": lambda m: m.F.instance_norm(X4, bias=torch.ones(5)),
    "instance_norm: running_mean size": lambda m: m.F.instance_norm(
        X4, torch.zeros(5), torch.ones(6)),
    "instance_norm: running_var size": lambda m: m.F.instance_norm(
        X4, torch.zeros(6), torch.ones(5)),
    "instance_norm: running_mean first": lambda m: m.F.instance_norm(
        X4, torch.zeros(5), torch.ones(5), torch.ones(5)),
    "instance_norm: running_mean only": lambda m: m.F.instance_norm(X4, torch.zeros(6), None),
    "instance_norm: weight before both-or-neither": lambda m: m.F.instance_norm(
        X4, torch.zeros(6), None, torch.ones(5)),
    "instance_norm: integer input": lambda m: m.F.instance_norm(
        torch.ones(2, 3, 4, dtype=torch.long)),
    "InstanceNorm1d: 4D input": lambda m: m.nn.InstanceNorm1d(3)(torch.randn(2, 3, 4, 4)),
    "InstanceNorm2d: 2D input": lambda m: m.nn.InstanceNorm2d(3)(torch.randn(4, 4)),
    "InstanceNorm2d: affine, channel mismatch": lambda m: m.nn.InstanceNorm2d(
        3, affine=True)(torch.randn(2, 4, 4, 4)),
    "InstanceNorm2d: one spatial element in eval": lambda m: m.nn.InstanceNorm2d(3).eval()(
        torch.randn(2, 3, 1, 1)),
    # GroupNorm: torch.nn.functional.group_norm
    "group_norm: 1D input": lambda m: m.F.group_norm(torch.randn(6), 2),
    "group_norm: one value per group": lambda m: m.F.group_norm(torch.randn(1, 6), 6),
    "group_norm: one value per group, 4D": lambda m: m.F.group_norm(torch.randn(1, 6, 1, 1), 6),
    "group_norm: not divisible": lambda m: m.F.group_norm(X4, 4),
    "group_norm: negative groups": lambda m: m.F.group_norm(X4, -2),
    "group_norm: zero groups": lambda m: m.F.group_norm(X4, 0),
    "group_norm: weight size": lambda m: m.F.group_norm(X4, 2, torch.ones(5)),
    "group_norm: weight per group": lambda m: m.F.group_norm(X4, 2, torch.ones(2)),
    "group_norm: bias size (prints the weight's shape)": lambda m: m.F.group_norm(
        X4, 2, torch.ones(6), torch.ones(5)),
    "group_norm: bias size, no weight": lambda m: m.F.group_norm(X4, 2, None, torch.ones(7)),
    "group_norm: integer input": lambda m: m.F.group_norm(torch.ones(2, 6, 3, dtype=torch.long), 2),
    "GroupNorm: not divisible": lambda m: m.nn.GroupNorm(4, 6),
    "GroupNorm: zero groups": lambda m: m.nn.GroupNorm(0, 6),
    "GroupNorm: channel mismatch": lambda m: m.nn.GroupNorm(2, 6)(torch.randn(2, 4, 3)),
    # LocalResponseNorm: torch.nn.functional.local_response_norm
    "local_response_norm: 2D input": lambda m: m.F.local_response_norm(torch.randn(2, 6), 2),
    "local_response_norm: 1D input": lambda m: m.F.local_response_norm(torch.randn(6), 2),
    "local_response_norm: size 0, 4D": lambda m: m.F.local_response_norm(X4, 0),
    "local_response_norm: size 0, 3D": lambda m: m.F.local_response_norm(torch.randn(2, 6, 5), 0),
    "local_response_norm: size -1": lambda m: m.F.local_response_norm(X4, -1),
    "local_response_norm: size -3": lambda m: m.F.local_response_norm(X4, -3),
    "local_response_norm: float size, 3D": lambda m: m.F.local_response_norm(
        torch.randn(2, 6, 5), 3.0),
    "local_response_norm: float size, 4D": lambda m: m.F.local_response_norm(X4, 3.0),
    "local_response_norm: float16 4D": lambda m: m.F.local_response_norm(X4.half(), 2),
}
# dtype mismatches: PyTorch's CPU kernel words these several ways, so only the type is compared
REFUSED_TYPE_ONLY = {
    "layer_norm: float input, half weight": lambda m: m.F.layer_norm(
        X3, (4,), torch.ones(4).half()),
    "layer_norm: double input, float weight": lambda m: m.F.layer_norm(
        X3.double(), (4,), torch.ones(4)),
    "layer_norm: float input, float weight, half bias": lambda m: m.F.layer_norm(
        X3, (4,), torch.ones(4), torch.ones(4).half()),
    "layer_norm: float input, integer weight": lambda m: m.F.layer_norm(
        X3, (4,), torch.ones(4, dtype=torch.long)),
}


def _raised(call):
    with pytest.raises(Exception) as info:
        call()
    return info.value


# The text of these is torch 2.13's (later releases print the bias's own shape).
TORCH_MESSAGE = {"group_norm: bias size (prints the weight's shape)",
                 "group_norm: bias size, no weight"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.pinned_torch)
                                  if c in TORCH_MESSAGE else c for c in REFUSED])
def test_refused_like_torch(case):
    theirs, ours = _raised(lambda: REFUSED[case](THEIRS)), _raised(lambda: REFUSED[case](OURS))
    assert type(ours) is type(theirs)
    assert str(ours) == str(theirs)


@pytest.mark.parametrize("case", list(REFUSED_TYPE_ONLY))
def test_refused_like_torch_type_only(case):
    theirs = _raised(lambda: REFUSED_TYPE_ONLY[case](THEIRS))
    ours = _raised(lambda: REFUSED_TYPE_ONLY[case](OURS))
    assert type(ours) is type(theirs)


STATEFUL_REFUSALS = [
    ("BatchNorm1d, one value per channel", lambda: nt.BatchNorm1d(3), (1, 3)),
    ("BatchNorm1d momentum None, one value", lambda: nt.BatchNorm1d(3, momentum=None), (1, 3)),
    ("BatchNorm2d, one value per channel", lambda: nt.BatchNorm2d(3), (1, 3, 1, 1)),
    ("SyncBatchNorm, one value per channel", lambda: nt.SyncBatchNorm(3), (1, 3)),
    ("InstanceNorm2d, one spatial element", lambda: nt.InstanceNorm2d(
        3, track_running_stats=True), (2, 3, 1, 1)),
    ("BatchNorm2d, channel mismatch", lambda: nt.BatchNorm2d(4), (2, 3, 2, 2)),
]


@pytest.mark.parametrize("name, make, shape", STATEFUL_REFUSALS,
                         ids=[c[0] for c in STATEFUL_REFUSALS])
def test_a_refused_call_leaves_the_state_as_it_was(name, make, shape):
    """Stricter than torch.nn, whose BatchNorm counts the refused batch in num_batches_tracked."""
    layer = make()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises((ValueError, RuntimeError)):
        layer(torch.randn(shape))
    after = layer.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


# --- ACCEPTANCE ------------------------------------------------------------------------------

# The last column says at what scale PyTorch's rounding happens, where it is not the scale
# of the compared quantity itself (None):
# * ZERO_VARIANCE (one element per row or group): PyTorch computes x * rstd - mean * rstd
#   with rstd = 1/sqrt(eps), each product rounded at |x| / sqrt(eps);
# * TWO_VALUES: x_hat = +-1 (up to eps), and the input gradient
#   rstd * gamma * (dy - mean(dy) - x_hat * mean(dy * x_hat)) cancels to almost 0; it is
#   rounded at the scale of its terms, |dy| * |gamma| * rstd (gamma < 1.5 here).
ZERO_VARIANCE, TWO_VALUES = "zero variance", "two values"

_bn = lambda cls, *a, **k: (lambda: getattr(nn, cls)(*a, **k), lambda: getattr(nt, cls)(*a, **k))

# (name, (make torch.nn layer, make normtext layer), input shape, dtype, training, rounding)
ACCEPTED = [
    # BatchNorm: a batch of one is fine as long as a channel has more than one value
    ("BatchNorm2d batch of one with spatial axes", _bn("BatchNorm2d", 3), (1, 3, 2, 2),
     torch.float32, True, None),
    ("BatchNorm1d batch of one with length", _bn("BatchNorm1d", 3), (1, 3, 4),
     torch.float32, True, None),
    ("BatchNorm3d batch of one", _bn("BatchNorm3d", 3), (1, 3, 2, 1, 2), torch.float32, True, None),
    ("BatchNorm1d two samples", _bn("BatchNorm1d", 3), (2, 3), torch.float32, True, TWO_VALUES),
    ("BatchNorm1d one channel", _bn("BatchNorm1d", 1), (4, 1), torch.float32, True, None),
    ("BatchNorm1d eval on a single sample", _bn("BatchNorm1d", 3), (1, 3), torch.float32, False, None),
    ("BatchNorm2d eval on a single value per channel", _bn("BatchNorm2d", 3), (1, 3, 1, 1),
     torch.float32, False, None),
    ("BatchNorm2d momentum None", _bn("BatchNorm2d", 3, momentum=None), (2, 3, 2, 2),
     torch.float32, True, None),
    ("BatchNorm1d rank 2", _bn("BatchNorm1d", 3), (5, 3), torch.float32, True, None),
    ("BatchNorm1d rank 3", _bn("BatchNorm1d", 3), (4, 3, 5), torch.float32, True, None),
    ("BatchNorm2d rank 4", _bn("BatchNorm2d", 3), (2, 3, 4, 4), torch.float32, True, None),
    ("BatchNorm3d rank 5", _bn("BatchNorm3d", 3), (2, 3, 2, 3, 4), torch.float32, True, None),
    ("BatchNorm2d empty batch", _bn("BatchNorm2d", 3), (0, 3, 4, 4), torch.float32, True, None),
    ("BatchNorm2d float64", _bn("BatchNorm2d", 3), (2, 3, 4, 4), torch.float64, True, None),
    ("BatchNorm2d float16", _bn("BatchNorm2d", 3), (2, 3, 4, 4), torch.float16, True, None),
    ("BatchNorm2d bfloat16", _bn("BatchNorm2d", 3), (2, 3, 4, 4), torch.bfloat16, True, None),
    ("BatchNorm1d float16 eval", _bn("BatchNorm1d", 3), (1, 3), torch.float16, False, None),
    # SyncBatchNorm (no process group: BatchNorm over any rank >= 2)
    ("SyncBatchNorm batch of one with spatial axes", _bn("SyncBatchNorm", 3), (1, 3, 2, 2),
     torch.float32, True, None),
    ("SyncBatchNorm rank 2", _bn("SyncBatchNorm", 3), (4, 3), torch.float32, True, None),
    ("SyncBatchNorm rank 5", _bn("SyncBatchNorm", 3), (1, 3, 2, 2, 2), torch.float32, True, None),
    ("SyncBatchNorm eval on a single sample", _bn("SyncBatchNorm", 3), (1, 3), torch.float32,
     False, None),
    ("SyncBatchNorm empty batch", _bn("SyncBatchNorm", 3), (0, 3), torch.float32, True, None),
    # InstanceNorm: two spatial elements suffice; unbatched input; a batch of one
    ("InstanceNorm1d two elements", _bn("InstanceNorm1d", 3, affine=True), (2, 3, 2),
     torch.float32, True, TWO_VALUES),
    ("InstanceNorm1d unbatched", _bn("InstanceNorm1d", 3, affine=True), (3, 4),
     torch.float32, True, None),
    ("InstanceNorm2d unbatched", _bn("InstanceNorm2d", 3), (3, 4, 4), torch.float32, True, None),
    ("InstanceNorm3d unbatched", _bn("InstanceNorm3d", 3), (3, 2, 2, 2), torch.float32, True, None),
    ("InstanceNorm2d batch of one, running stats",
     _bn("InstanceNorm2d", 3, affine=True, track_running_stats=True), (1, 3, 2, 2),
     torch.float32, True, None),
    ("InstanceNorm2d eval with running stats on one element",
     _bn("InstanceNorm2d", 3, track_running_stats=True), (1, 3, 1, 1), torch.float32, False, None),
    ("InstanceNorm1d one channel", _bn("InstanceNorm1d", 1, affine=True), (2, 1, 4),
     torch.float32, True, None),
    ("InstanceNorm2d empty batch", _bn("InstanceNorm2d", 3), (0, 3, 4, 4), torch.float32, True, None),
    ("InstanceNorm2d float64", _bn("InstanceNorm2d", 3, affine=True), (2, 3, 4, 4),
     torch.float64, True, None),
    ("InstanceNorm2d float16", _bn("InstanceNorm2d", 3, affine=True), (2, 3, 4, 4),
     torch.float16, True, None),
    ("InstanceNorm2d bfloat16", _bn("InstanceNorm2d", 3, affine=True), (2, 3, 4, 4),
     torch.bfloat16, True, None),
    # GroupNorm
    ("GroupNorm one element per group", _bn("GroupNorm", 3, 3), (2, 3, 1), torch.float32, True,
     ZERO_VARIANCE),
    ("GroupNorm one channel per group", _bn("GroupNorm", 3, 3), (2, 3, 4), torch.float32, True, None),
    ("GroupNorm one group", _bn("GroupNorm", 1, 6), (2, 6, 3), torch.float32, True, None),
    ("GroupNorm one channel", _bn("GroupNorm", 1, 1), (2, 1, 4), torch.float32, True, None),
    ("GroupNorm batch of one", _bn("GroupNorm", 2, 6), (1, 6, 4), torch.float32, True, None),
    ("GroupNorm rank 2", _bn("GroupNorm", 2, 6), (4, 6), torch.float32, True, None),
    ("GroupNorm rank 5", _bn("GroupNorm", 2, 6), (2, 6, 2, 2, 2), torch.float32, True, None),
    ("GroupNorm empty batch", _bn("GroupNorm", 3, 6), (0, 6, 4, 4), torch.float32, True, None),
    ("GroupNorm float64", _bn("GroupNorm", 2, 6), (2, 6, 4, 4), torch.float64, True, None),
    ("GroupNorm float16", _bn("GroupNorm", 2, 6), (2, 6, 4, 4), torch.float16, True, None),
    ("GroupNorm bfloat16", _bn("GroupNorm", 2, 6), (2, 6, 4, 4), torch.bfloat16, True, None),
    # LayerNorm and RMSNorm
    ("LayerNorm one element per row", _bn("LayerNorm", 1), (3, 1), torch.float32, True,
     ZERO_VARIANCE),
    ("LayerNorm unbatched", _bn("LayerNorm", 4), (4,), torch.float32, True, None),
    ("LayerNorm a single row, eval", _bn("LayerNorm", 4), (1, 4), torch.float32, False, None),
    ("LayerNorm rank 3 over two axes", _bn("LayerNorm", [3, 4]), (2, 3, 4), torch.float32, True, None),
    ("LayerNorm rank 5", _bn("LayerNorm", [2, 3]), (2, 2, 2, 2, 3), torch.float32, True, None),
    ("LayerNorm empty batch", _bn("LayerNorm", 4), (0, 4), torch.float32, True, None),
    ("LayerNorm float64", _bn("LayerNorm", 8), (4, 8), torch.float64, True, None),
    ("LayerNorm float16", _bn("LayerNorm", 8), (4, 8), torch.float16, True, None),
    ("LayerNorm bfloat16", _bn("LayerNorm", 8), (4, 8), torch.bfloat16, True, None),
    ("RMSNorm one element per row", _bn("RMSNorm", 1), (3, 1), torch.float32, True, None),
    ("RMSNorm unbatched", _bn("RMSNorm", 4), (4,), torch.float32, True, None),
    ("RMSNorm rank 4", _bn("RMSNorm", [2, 3]), (2, 2, 2, 3), torch.float32, True, None),
    ("RMSNorm empty batch", _bn("RMSNorm", 4), (0, 4), torch.float32, True, None),
    ("RMSNorm float64", _bn("RMSNorm", 8), (4, 8), torch.float64, True, None),
    ("RMSNorm float16", _bn("RMSNorm", 8), (4, 8), torch.float16, True, None),
    ("RMSNorm bfloat16", _bn("RMSNorm", 8), (4, 8), torch.bfloat16, True, None),
    # LocalResponseNorm
    ("LocalResponseNorm one channel", _bn("LocalResponseNorm", 2), (2, 1, 4), torch.float32,
     True, None),
    ("LocalResponseNorm window wider than the channels", _bn("LocalResponseNorm", 5), (2, 3, 4),
     torch.float32, True, None),
    ("LocalResponseNorm rank 3", _bn("LocalResponseNorm", 3), (2, 4, 5), torch.float32, True, None),
    ("LocalResponseNorm rank 4", _bn("LocalResponseNorm", 3), (2, 4, 3, 3), torch.float32, True, None),
    ("LocalResponseNorm rank 5", _bn("LocalResponseNorm", 3), (1, 4, 2, 2, 2), torch.float32,
     True, None),
    ("LocalResponseNorm empty batch", _bn("LocalResponseNorm", 2), (0, 3, 4, 4), torch.float32,
     True, None),
    ("LocalResponseNorm float64", _bn("LocalResponseNorm", 3), (2, 4, 3, 3), torch.float64, True, None),
    ("LocalResponseNorm float16 rank 3", _bn("LocalResponseNorm", 3), (2, 4, 5), torch.float16,
     True, None),
    ("LocalResponseNorm bfloat16 rank 3", _bn("LocalResponseNorm", 3), (2, 4, 5), torch.bfloat16,
     True, None),
]


def _same_state(theirs: nn.Module, ours: nn.Module, dtype: torch.dtype) -> None:
    """Both layers in ``dtype`` with torch's parameters and running statistics, moved off their
    defaults (so that evaluation and the running update are exercised)."""
    theirs.to(dtype)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for key, t in theirs.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
    ours.to(dtype).load_state_dict(theirs.state_dict())


def _run(layer, x, dy, training):
    layer.train(training)
    x = x.clone().requires_grad_(True)
    y = layer(x)
    y.backward(dy)
    grads = {k: p.grad for k, p in layer.named_parameters()}
    return y, x.grad, grads, {k: v for k, v in layer.state_dict().items()}


def _close(name, got, want, x, dtype, scale=None):
    """Within the harness tolerance for ``dtype`` at ``scale`` (default: that of ``want``)."""
    assert got is not None, f"{name}: None where torch has a tensor"
    assert got.shape == want.shape and got.dtype == want.dtype, name
    if not got.is_floating_point():
        assert torch.equal(got, want), name      # num_batches_tracked
        return
    scale = max(want.abs().max().item() if want.numel() else 0.0, scale or 0.0)
    m = max(x.numel(), 1)                        # every reduction is over at most numel(x) values
    atol = tolerance(str(dtype).replace("torch.", ""), m) * scale
    torch.testing.assert_close(got, want, rtol=0, atol=atol, msg=lambda s: f"{name}: {s}")


def _input_grad_scale(x, dy, rule):
    """The size of the terms the input gradient is a difference of, on the rows that need it."""
    if rule == TWO_VALUES:
        pairs = x.double().reshape(-1, 2) if x.dim() == 3 else x.double().T   # the pairs
        rstd = (pairs.var(dim=1, unbiased=False) + 1e-5).rsqrt().max().item()
        return dy.abs().max().item() * 1.5 * rstd
    return None


@pytest.mark.parametrize("name, makers, shape, dtype, training, rounding", ACCEPTED,
                         ids=[c[0] for c in ACCEPTED])
def test_accepted_like_torch(name, makers, shape, dtype, training, rounding):
    theirs, ours = makers[0](), makers[1]()
    _same_state(theirs, ours, dtype)
    gen = torch.Generator().manual_seed(4)
    x = (torch.randn(shape, generator=gen) * 2 + 1).to(dtype)
    dy = torch.randn(shape, generator=gen).to(dtype)
    y_t, dx_t, grads_t, state_t = _run(theirs, x, dy, training)
    y_o, dx_o, grads_o, state_o = _run(ours, x, dy, training)

    scale = x.abs().max().item() / 1e-5 ** 0.5 if rounding == ZERO_VARIANCE else None
    _close("output", y_o, y_t, x, dtype, scale)
    _close("input grad", dx_o, dx_t, x, dtype, _input_grad_scale(x, dy, rounding) or scale)
    assert list(grads_o) == list(grads_t) and list(state_o) == list(state_t)
    for key in grads_t:
        _close(f"{key} grad", grads_o[key], grads_t[key], x, dtype, scale)
    for key in state_t:
        _close(key, state_o[key], state_t[key], x, dtype, scale)
