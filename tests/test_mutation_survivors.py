"""Behaviours no test checked until a mutation run changed them and every test still passed.

Each test below fails on a one-line change (a *mutant*) that `make mutation`
found surviving the unit tests; the mutant is named in the test's docstring.
They check what a user relies on: that a module built with ``dtype=`` holds
its tensors in that dtype, that checkpoints load (or are refused) as PyTorch
loads them, that an augmentation layer actually augments, and that errors
read as PyTorch's.
"""
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from normtext import numpy as ref
from normtext import torch as nt
from normtext.torch import more, normfree, practice, rnn, transformer


def _raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the exception itself is compared
        return e
    raise AssertionError("no exception")


# --- modules built with dtype= hold every tensor in that dtype --------------------------

FACTORIES = {
    "BatchWhitening": lambda dt: more.BatchWhitening(4, dtype=dt),
    "GhostBatchNorm2d": lambda dt: practice.GhostBatchNorm2d(4, virtual_batch_size=2, dtype=dt),
    "BatchRenorm2d": lambda dt: practice.BatchRenorm2d(4, dtype=dt),
    "SequenceBatchNorm": lambda dt: transformer.SequenceBatchNorm(4, dtype=dt),
    "AdaLNZeroBlock": lambda dt: transformer.AdaLNZeroBlock(8, 2, 3, dim_feedforward=16, dtype=dt),
    "BatchNorm2d": lambda dt: nt.BatchNorm2d(4, dtype=dt),
    "InstanceNorm2d": lambda dt: nt.InstanceNorm2d(4, affine=True, track_running_stats=True,
                                                   dtype=dt),
    "GroupNorm": lambda dt: nt.GroupNorm(2, 4, dtype=dt),
    "LayerNorm": lambda dt: nt.LayerNorm(4, dtype=dt),
    "RMSNorm": lambda dt: nt.RMSNorm(4, dtype=dt),
    "LayerNormLSTMCell": lambda dt: nt.LayerNormLSTMCell(3, 4, dtype=dt),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_module_built_with_dtype_holds_every_floating_tensor_in_it(name):
    """Mutants: ``torch.zeros(num_features, **factory)`` -> ``torch.zeros(num_features)``
    (BatchWhitening, LayerNormLSTMCell's bias_ih), ``dtype`` dropped from
    ``super().__init__`` (GhostBatchNorm) or from the inner BatchNorm (SequenceBatchNorm)."""
    module = FACTORIES[name](torch.float64)
    tensors = dict(module.named_parameters()) | dict(module.named_buffers())
    floating = {k: t.dtype for k, t in tensors.items() if t.is_floating_point()}
    assert floating and set(floating.values()) == {torch.float64}, floating


# --- checkpoints load as PyTorch loads them ----------------------------------------------

def test_batch_norm_state_dict_without_num_batches_tracked_is_refused_as_torch_refuses_it():
    """Mutant: ``local_metadata.get("version", None)`` -> ``local_metadata.get(None)``: every
    checkpoint would count as pre-0.4.1 and get ``num_batches_tracked`` filled in silently."""
    messages = []
    for cls in (nt.BatchNorm2d, torch.nn.BatchNorm2d):
        sd = cls(3).state_dict()  # carries _metadata with version 2
        del sd["num_batches_tracked"]
        messages.append(str(_raised(lambda: cls(3).load_state_dict(sd))))
    assert "num_batches_tracked" in messages[0]
    assert messages[0] == messages[1]


@pytest.mark.xfail(strict=True, reason="normtext resets the count to 0; PyTorch 2.13 keeps "
                   "the layer's own num_batches_tracked when a version-less checkpoint lacks it")
def test_batch_norm_old_checkpoint_keeps_the_layers_count_as_torch():
    counts = []
    for cls in (nt.BatchNorm2d, torch.nn.BatchNorm2d):
        old = OrderedDict((k, v) for k, v in cls(3).state_dict().items()
                          if k != "num_batches_tracked")  # no _metadata: a pre-0.4.1 checkpoint
        layer = cls(3)
        layer.num_batches_tracked.fill_(7)
        layer.load_state_dict(old)
        counts.append(int(layer.num_batches_tracked))
    assert counts[0] == counts[1]


@pytest.mark.parametrize("versioned", [False, True])
def test_instance_norm_refuses_running_stats_it_does_not_track_as_torch_does(versioned):
    """Mutants: ``keys = [...]`` -> ``keys = None`` and ``get("version")`` ->
    ``get("VERSION")``: an old checkpoint's running statistics are refused with PyTorch's
    explanation, a current one's with PyTorch's "Unexpected key(s)"."""
    messages = []
    for cls in (nt.InstanceNorm2d, torch.nn.InstanceNorm2d):
        if versioned:
            sd = cls(3, track_running_stats=True).state_dict()
        else:
            sd = OrderedDict(running_mean=torch.zeros(3), running_var=torch.ones(3))
        messages.append(str(_raised(lambda: cls(3).load_state_dict(sd))))
    assert messages[0].replace("normtext.", "") == messages[1]
    assert ("Unexpected running stats" in messages[0]) is not versioned


# --- layers whose main path no test reached ---------------------------------------------------

def test_cross_norm_exchanges_statistics_in_training():
    """Mutants: ``self.p == 0.0`` -> ``self.p != 0.0`` (CrossNorm never augments) and
    ``perm = torch.randperm(...)`` -> ``perm = None``."""
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 2 + 1
    layer = more.CrossNorm(p=1.0).train()
    torch.manual_seed(0)
    y = layer(x)
    torch.manual_seed(0)
    torch.rand(())  # the draw that decides whether to augment
    perm = torch.randperm(4).tolist()
    assert perm != list(range(4))  # this seed exchanges statistics between instances
    assert torch.equal(y, more.cross_norm(x, perm, layer.eps))
    assert not torch.equal(y, x)
    assert torch.equal(more.CrossNorm(p=0.0).train()(x), x)  # p = 0: never
    assert torch.equal(layer.eval()(x), x)  # evaluation: identity


def test_pixel_norm_takes_a_2d_input():
    """Mutant: ``input.dim() < 2`` -> ``input.dim() < 3``: (N, C) features are refused."""
    x = torch.randn(5, 8, dtype=torch.float64)
    want = x / torch.sqrt(x.square().mean(1, keepdim=True) + 1e-8)
    torch.testing.assert_close(normfree.pixel_norm(x), want, rtol=0,
                               atol=16 * torch.finfo(torch.float64).eps * 8 ** 0.5 * want.abs().max())
    with pytest.raises(ValueError, match="channels on axis 1"):
        normfree.pixel_norm(torch.randn(8))


def test_conditional_batch_norm_checks_its_momentum():
    """Mutant: ``errors.check_momentum(momentum)`` -> ``errors.check_momentum(None)``."""
    with pytest.raises(ValueError, match="momentum must be in"):
        more.ConditionalBatchNorm2d(4, 3, momentum=1.5)
    with pytest.raises(ValueError, match="momentum must be in"):
        nt.BatchNorm2d(4, momentum=1.5)  # the same rule as BatchNorm's


def test_row_lstm_classifier_passes_layer_norm_to_its_cell():
    """Mutant: ``layer_norm=layer_norm`` dropped from the cell: the plain variant had LN too."""
    plain, normed = rnn.RowLSTMClassifier(layer_norm=False), rnn.RowLSTMClassifier(layer_norm=True)
    assert sum(p.numel() for p in plain.parameters()) < sum(p.numel() for p in normed.parameters())


def test_hand_written_layer_norm_words_its_errors_as_torch():
    """Mutant: ``op="layer_norm"`` -> ``op=None`` in ``layer_norm_hand``: PyTorch writes
    ``[*, 3]`` for layer_norm and ``[*3]`` for rms_norm."""
    x = torch.randn(2, 4)
    assert str(_raised(lambda: nt.layer_norm_hand(x, (3,)))) == \
        str(_raised(lambda: TF.layer_norm(x, (3,))))
    assert str(_raised(lambda: nt.rms_norm_hand(x, (3,)))) == \
        str(_raised(lambda: TF.rms_norm(x, (3,))))


def test_batch_renorm_defaults_are_the_papers_final_limits():
    """Mutant: ``r_max: float = 3.0`` -> ``4.0``. Ioffe (2017) raises r_max to 3 and d_max to 5."""
    layer = practice.BatchRenorm2d(4)
    assert (layer.r_max, layer.d_max) == (3.0, 5.0)


# --- the float64 reference checks its parameters as PyTorch does ------------------------------

X = np.random.default_rng(0).normal(size=(4, 6, 3))
BAD_PARAMETERS = {
    "batch_norm weight": lambda F, t: F.batch_norm(t(X), None, None, t(np.ones(5)), None,
                                                   training=True),
    "batch_norm bias": lambda F, t: F.batch_norm(t(X), None, None, None, t(np.zeros(5)),
                                                 training=True),
    "layer_norm weight": lambda F, t: F.layer_norm(t(X), (3,), t(np.ones(2)), None),
    "layer_norm bias": lambda F, t: F.layer_norm(t(X), (3,), None, t(np.zeros(2))),
    "group_norm weight": lambda F, t: F.group_norm(t(X), 2, t(np.ones(5)), None),
}


@pytest.mark.parametrize("case", list(BAD_PARAMETERS))
def test_numpy_reference_refuses_parameters_of_the_wrong_shape_as_torch(case):
    """Mutants: ``weight=shape(weight)`` or ``bias=shape(bias)`` dropped from the NumPy
    reference's checks (batch_norm, layer_norm, rms_norm, group_norm)."""
    theirs = _raised(lambda: BAD_PARAMETERS[case](TF, torch.from_numpy))
    ours = _raised(lambda: BAD_PARAMETERS[case](ref, np.asarray))
    assert type(ours) is type(theirs) and str(ours) == str(theirs)


def test_numpy_batch_norm_defaults_to_evaluation_like_torch():
    """Mutant: ``training=False`` -> ``training=True`` as the default of the NumPy reference."""
    rm, rv = np.full(6, 0.5), np.full(6, 2.0)
    y = ref.batch_norm(X, rm, rv).y
    tol = 16 * np.finfo(np.float64).eps * np.abs(y).max()  # a few elementwise roundings
    np.testing.assert_allclose(y, (X - 0.5) / np.sqrt(2.0 + 1e-5), rtol=0, atol=tol)
    want = TF.batch_norm(torch.from_numpy(X), torch.from_numpy(rm), torch.from_numpy(rv)).numpy()
    np.testing.assert_allclose(y, want, rtol=0, atol=tol)


def test_batch_norm_train_applies_the_bias():
    """Mutant: ``shaped(bias)`` -> ``None`` in ``batch_norm_train`` (gradcheck alone passes)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 4, generator=g, dtype=torch.float64)
    w, b = torch.rand(3, generator=g, dtype=torch.float64) + 0.5, torch.randn(3, generator=g,
                                                                              dtype=torch.float64)
    got = nt.batch_norm_train(x, w, b)
    want = TF.batch_norm(x, None, None, w, b, training=True)
    m = 8 * 4
    assert float((got - want).abs().max()) <= 16 * torch.finfo(torch.float64).eps * m ** 0.5 * \
        float(want.abs().max())


def test_adain_names_itself_in_its_errors():
    """Mutant: ``"adain"`` -> ``"ADAIN"`` in the style check's message."""
    with pytest.raises(ValueError, match=r"^adain expects an input of shape \(N, C, \*spatial\)"):
        more.adain(torch.randn(2, 3, 4, 4), torch.randn(2, 3))


def test_self_attention_takes_a_per_head_mask_as_torch():
    """Mutant: ``reshape(-1, H, T, T)`` -> ``reshape(-1, H, T)`` for a 3-D ``(N * H, T, T)`` mask."""
    N, T, E, H = 2, 5, 8, 2
    g = torch.Generator().manual_seed(0)
    ours = transformer.MultiheadSelfAttention(E, H, dtype=torch.float64)
    theirs = torch.nn.MultiheadAttention(E, H, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(ours.in_proj_weight)
        theirs.in_proj_bias.copy_(ours.in_proj_bias)
        theirs.out_proj.weight.copy_(ours.out_proj.weight)
        theirs.out_proj.bias.copy_(ours.out_proj.bias)
    x = torch.randn(N, T, E, generator=g, dtype=torch.float64)
    mask = torch.rand(N * H, T, T, generator=g) < 0.3
    mask[..., 0] = False  # every query keeps one key
    want, _ = theirs(x, x, x, attn_mask=mask, need_weights=False)
    got = ours(x, attn_mask=mask)
    assert float((got - want).abs().max()) <= 16 * torch.finfo(torch.float64).eps * E ** 0.5 * \
        float(want.abs().max())


def test_functional_batch_norm_defaults_to_evaluation_like_torch():
    """Mutant: ``training: bool = False`` -> ``True`` in ``normtext.torch.functional.batch_norm``."""
    x = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(0))
    rm, rv = torch.full((3,), 0.5), torch.full((3,), 2.0)
    ours, theirs = nt.functional.batch_norm(x, rm.clone(), rv.clone()), TF.batch_norm(x, rm, rv)
    assert float((ours - theirs).abs().max()) <= 16 * torch.finfo(torch.float32).eps * \
        float(theirs.abs().max())
    assert torch.equal(rm, torch.full((3,), 0.5))  # evaluation: the running mean is only read


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layer_norm_takes_half_input_with_float32_parameters_like_torch(dtype):
    """Mutant: ``("float16", "bfloat16")`` -> ``("float16", "XXbfloat16XX")`` in the dtype check:
    PyTorch's CPU layer_norm accepts float32 gamma/beta with float16 or bfloat16 input."""
    x = torch.randn(2, 8, dtype=dtype)
    w, b = torch.rand(8) + 0.5, torch.randn(8)
    ours, theirs = nt.functional.layer_norm(x, (8,), w, b), TF.layer_norm(x, (8,), w, b)
    assert ours.dtype == theirs.dtype == dtype
    unit = torch.finfo(dtype).eps * float(theirs.float().abs().max())  # one unit at the scale
    assert float((ours.float() - theirs.float()).abs().max()) <= unit


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
                                   torch.bool], ids=str)
@pytest.mark.parametrize("op", ["group_norm", "batch_norm"])
def test_integer_input_is_refused_with_torchs_message(op, dtype):
    """Mutant: ``torch.int64: "Long"`` -> ``"long"`` in the table of C++ type names the
    messages quote (PyTorch: ``"GroupNormKernelImpl" not implemented for 'Long'``)."""
    x = torch.ones(2, 4, 3, dtype=dtype)
    call = {"group_norm": lambda F: F.group_norm(x, 2),
            "batch_norm": lambda F: F.batch_norm(x, None, None, training=True)}[op]
    ours, theirs = _raised(lambda: call(nt.functional)), _raised(lambda: call(TF))
    assert type(ours) is type(theirs) and str(ours) == str(theirs)
