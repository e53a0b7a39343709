"""A drop-in is a drop-in under PyTorch's program transforms and utilities.

The same small network is built twice, with torch.nn's norms and with normtext's,
with the same parameters and running statistics. Wherever the torch.nn network
works (torch.compile with and without graph breaks, torch.export, torch.jit.trace,
torch.func's functional_call, vmap and grad, CPU autocast, the conv-BN fusion of
torch.nn.utils, channels_last, copy.deepcopy, pickle, torch.save), the normtext
network works and gives the same result. Where it cannot (torch.jit.script,
torch.fx's default tracer, torch.ao.quantization.fuse_modules without a mapping)
the documented behaviour is asserted (book/conventions.md, "Program transforms").

Compilation captures the whole network with Dynamo (``fullgraph=True``, the
``eager`` backend), and a small network with AOTAutograd too (``aot_eager``:
forward, backward and the in-place buffer updates traced), which is where a
drop-in can fail; code generation by Inductor is PyTorch's own business and would
add tens of seconds per test on a CPU.
"""
from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.ao.quantization import fuse_modules
from torch.ao.quantization.fuser_method_mappings import fuse_conv_bn

from normtext import torch as nt
from normtext.testing.compare import tolerance

CAPTURE, TRACE = "eager", "aot_eager"     # the two torch.compile backends used


def _net(L, bn_momentum=0.1) -> nn.Sequential:
    torch.manual_seed(0)
    # no norm follows another per-channel affine map, which would cancel its gradient
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), L.BatchNorm2d(4, momentum=bn_momentum),
        nn.ReLU(), nn.Conv2d(4, 4, 1, bias=False),
        L.InstanceNorm2d(4, affine=True, track_running_stats=True), nn.ReLU(),
        nn.Conv2d(4, 4, 1, bias=False), L.GroupNorm(2, 4), L.LocalResponseNorm(2),
        nn.Flatten(), L.LayerNorm(64), nn.Linear(64, 3), L.RMSNorm(3))


NORMS = {"1", "4", "7", "10", "12"}     # the indices of the norm layers in _net


def _pair(bn_momentum=0.1):
    """torch.nn's network and normtext's, with the same (non-default) parameters and buffers."""
    theirs, ours = _net(nn, bn_momentum), _net(nt, bn_momentum)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, t in theirs.state_dict().items():
            if t.is_floating_point() and key.split(".")[0] in NORMS:
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def _x(n=6, seed=2):
    return torch.randn(n, 2, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 + 1


def assert_close(got, want, dtype="float32", m=96):
    """The harness tolerance at the scale of ``want``; ``m`` = the largest reduction (N*H*W)."""
    atol = tolerance(dtype, m) * max(want.abs().max().item(), 1e-30)
    torch.testing.assert_close(got, want, rtol=0, atol=atol)


def _train_steps(model, steps=2, seed=2):
    """Outputs, parameter gradients and buffers after ``steps`` training steps (no optimizer)."""
    model.train()
    outputs, grads = [], []
    for i in range(steps):
        y = model(_x(seed=seed + i))
        # a random direction: sum(y^2) would be constant after RMSNorm or GroupNorm
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + i)))
        outputs.append(y.detach())
    grads = [p.grad.clone() for p in model.parameters()]
    return outputs, grads, [b.clone() for b in model.buffers()]


def assert_same_training(got, want):
    for g, w in zip(got[0], want[0]):
        assert_close(g, w)
    for g, w in zip(got[1], want[1]):
        assert_close(g, w)
    assert len(got[2]) == len(want[2])
    for g, w in zip(got[2], want[2]):
        if g.is_floating_point():
            assert_close(g, w)
        else:
            assert torch.equal(g, w)


# --- torch.compile ---------------------------------------------------------------------------

class _WithGraphBreak(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        x = self.net[:2](x)
        torch._dynamo.graph_break()                     # splits the graph after the BatchNorm
        return self.net[2:](x)


def _small(L, bn_momentum=0.1):
    """Conv, BatchNorm, ReLU, GroupNorm: the compile tests that need no other layer."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False),
                         L.BatchNorm2d(4, momentum=bn_momentum), nn.ReLU(), L.GroupNorm(2, 4))


def _small_pair(bn_momentum=0.1):
    theirs, ours = _small(nn, bn_momentum), _small(nt, bn_momentum)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def test_compile_fullgraph_like_torch():
    theirs, ours = _pair()
    compiled = torch.compile(ours, fullgraph=True, backend=CAPTURE)
    assert_same_training(_train_steps(compiled), _train_steps(theirs))


def test_compile_with_a_graph_break_like_torch():
    theirs, ours = _small_pair()
    compiled = torch.compile(_WithGraphBreak(ours), backend=CAPTURE)
    assert_same_training(_train_steps(compiled), _train_steps(theirs))
    theirs.eval(), ours.eval()
    assert_close(compiled(_x()), theirs(_x()))


def test_compile_through_aot_autograd_momentum_none_counts_every_batch():
    """The cumulative average reads num_batches_tracked: the compiled network must not freeze it.
    (torch.nn's own BatchNorm with momentum=None does not compile with fullgraph=True;
    normtext's does.)"""
    theirs, ours = _small_pair(bn_momentum=None)
    compiled = torch.compile(ours, fullgraph=True, backend=TRACE)
    assert_same_training(_train_steps(compiled, steps=3), _train_steps(theirs, steps=3))
    assert ours[1].num_batches_tracked.item() == 3


# --- torch.export, torch.jit ------------------------------------------------------------------

@pytest.mark.parametrize("training", [False, True])
def test_export_like_torch(training):
    theirs, ours = _pair()
    theirs.train(training), ours.train(training)
    exported_t = torch.export.export(theirs, (_x(),)).module()
    exported_o = torch.export.export(ours, (_x(),)).module()
    assert_close(exported_o(_x(seed=5)), exported_t(_x(seed=5)))
    assert_close(exported_o(_x(seed=5)), theirs(_x(seed=5)))
    for (key, got), (_, want) in zip(exported_o.state_dict().items(),
                                     exported_t.state_dict().items()):
        assert_close(got.float(), want.float())


def test_jit_trace_like_torch():
    theirs, ours = _pair()
    theirs.eval(), ours.eval()
    traced = torch.jit.trace(ours, (_x(),), check_trace=False)
    assert_close(traced(_x(seed=5)), theirs(_x(seed=5)))


def test_jit_script_is_not_supported():
    """TorchScript compiles a subset of Python; normtext's checks use the rest (documented)."""
    torch.jit.script(nn.BatchNorm2d(3))
    with pytest.raises(RuntimeError, match="Unknown type"):
        torch.jit.script(nt.BatchNorm2d(3))


def test_fx_default_tracer_needs_normtext_layers_as_leaves():
    """torch.fx keeps torch.nn's layers as leaves and traces into anything else; normtext's
    shape checks are Python control flow, so normtext's layers must be declared leaves."""
    theirs, ours = _pair()
    torch.fx.symbolic_trace(theirs)
    with pytest.raises(torch.fx.proxy.TraceError):
        torch.fx.symbolic_trace(ours)

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return type(m).__module__.startswith("normtext.") or super().is_leaf_module(m, qualname)

    traced = torch.fx.GraphModule(ours, Tracer().trace(ours))
    theirs.eval(), traced.eval()
    assert_close(traced(_x()), theirs(_x()))


# --- torch.func -------------------------------------------------------------------------------

def _state(model, scale=1.0):
    params = {k: v.detach() * scale for k, v in model.named_parameters()}
    return params, {k: v.clone() for k, v in model.named_buffers()}


def test_functional_call_like_torch():
    theirs, ours = _pair()
    for training in (True, False):
        theirs.train(training), ours.train(training)
        p, b = _state(theirs, scale=1.5)
        want = torch.func.functional_call(theirs, (p, b), (_x(),))
        got = torch.func.functional_call(ours, (p, {k: v.clone() for k, v in b.items()}), (_x(),))
        assert_close(got, want)


def test_grad_like_torch():
    theirs, ours = _pair()
    theirs.eval(), ours.eval()

    def loss(model):
        return lambda p, b: torch.func.functional_call(model, (p, b), (_x(),)).square().sum()

    want = torch.func.grad(loss(theirs))(*_state(theirs))
    got = torch.func.grad(loss(ours))(*_state(ours))
    assert list(got) == list(want)
    for key in want:
        assert_close(got[key], want[key])


def test_vmap_over_single_samples_in_eval_like_torch():
    theirs, ours = _pair()
    theirs.eval(), ours.eval()
    x = _x().unsqueeze(1)                                 # 6 batches of one sample
    assert_close(torch.func.vmap(ours)(x), torch.func.vmap(theirs)(x))


# --- autocast, memory format -------------------------------------------------------------------

def test_cpu_autocast_bfloat16_like_torch():
    theirs, ours = _pair()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = theirs(_x()), ours(_x())
    assert got.dtype == want.dtype
    assert_close(got.float(), want.float(), dtype="bfloat16")
    with torch.autocast("cpu", dtype=torch.bfloat16):       # layer by layer: same dtypes
        x_t = x_o = _x()
        for layer_t, layer_o in zip(theirs, ours):
            x_t, x_o = layer_t(x_t), layer_o(x_o)
            assert x_o.dtype == x_t.dtype, type(layer_o).__name__


def test_channels_last_like_torch():
    theirs, ours = _pair()
    x = _x().to(memory_format=torch.channels_last)
    theirs.to(memory_format=torch.channels_last), ours.to(memory_format=torch.channels_last)
    assert_close(ours(x), theirs(x))


# --- fusion --------------------------------------------------------------------------------------

def test_fuse_conv_bn_eval_like_torch():
    theirs, ours = _pair()
    theirs.eval(), ours.eval()
    fused_t = torch.nn.utils.fusion.fuse_conv_bn_eval(theirs[0], theirs[1])
    fused_o = torch.nn.utils.fusion.fuse_conv_bn_eval(ours[0], ours[1])
    assert torch.equal(fused_o.weight, fused_t.weight) and torch.equal(fused_o.bias, fused_t.bias)
    assert_close(fused_o(_x()), ours[1](ours[0](_x())))


def test_ao_fuse_modules_needs_a_mapping_for_normtext_layers():
    """fuse_modules looks the pair of types up in a table of torch.nn types (documented);
    given the mapping for normtext's BatchNorm it fuses as for torch.nn's."""
    theirs, ours = _pair()
    theirs.eval(), ours.eval()
    want = fuse_modules(copy.deepcopy(theirs), [["0", "1"]])
    with pytest.raises(AssertionError, match="did not find fuser method"):
        fuse_modules(copy.deepcopy(ours), [["0", "1"]])
    mapping = {"additional_fuser_method_mapping": {(nn.Conv2d, nt.BatchNorm2d): fuse_conv_bn}}
    got = fuse_modules(copy.deepcopy(ours), [["0", "1"]], fuse_custom_config_dict=mapping)
    assert type(got[0]) is nn.Conv2d and type(got[1]) is nn.Identity
    assert_close(got(_x()), want(_x()))


# --- copies and serialization ------------------------------------------------------------------

def _roundtrip_save(model):
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("copy_fn", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m)),
                                     _roundtrip_save], ids=["deepcopy", "pickle", "torch.save"])
def test_copies_keep_state_and_behaviour(copy_fn):
    _, ours = _pair()
    ours.train()
    ours(_x())                                            # running statistics moved
    copied = copy_fn(ours)
    for (k, a), (_, b) in zip(ours.state_dict().items(), copied.state_dict().items()):
        assert torch.equal(a, b), k
    assert [type(m) for m in copied.modules()] == [type(m) for m in ours.modules()]
    assert_same_training(_train_steps(copied), _train_steps(ours))
