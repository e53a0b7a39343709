"""The plumbing of ``python -m normtext.check`` and ``python -m normtext.bench`` (never timings)."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch import nn

from normtext import bench, check
from normtext import torch as nt
from normtext.torch import functional as NF
from normtext.testing import compare, registry
from normtext.spec import LAYER_NORM


def _check(candidate_module):
    return check.Check("LayerNorm", lambda: compare.TorchLayer(candidate_module, name="candidate"),
                       lambda: compare.TorchLayer(nn.LayerNorm(16)), shape=(8, 16),
                       spec=LAYER_NORM)


def test_check_passes_a_correct_layer(capsys):
    assert check.main([], checks=[_check(nt.LayerNorm(16))]) == 0
    assert "1/1 normtext comparisons pass" in capsys.readouterr().out


def test_check_fails_when_a_tolerance_is_broken(capsys):
    # an injected bad implementation: eps 0.1 instead of 1e-5 changes every output a little
    bad = nn.LayerNorm(16, eps=0.1)
    assert check.main([], checks=[_check(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "0/1 normtext comparisons pass" in out


def test_check_counts_a_crash_as_a_failure():
    class Broken(nn.LayerNorm):
        def forward(self, x):
            raise RuntimeError("broken on purpose")
    rows = check.run_checks([_check(Broken(16))])
    assert not rows[0]["ok"] and "broken on purpose" in rows[0]["worst"]
    assert check.exit_status(rows) == 1


def test_check_ignores_information_rows_in_the_exit_status():
    rows = [{"ok": True, "counts": True}, {"ok": False, "counts": False}]
    assert check.exit_status(rows) == 0
    assert check.exit_status([{"ok": False, "counts": False}]) == 1  # nothing counted


def test_default_checks_cover_the_norms_asked_for():
    checks = check.default_checks(norms=["BatchNorm", "LayerNorm"])
    assert {c.norm for c in checks} == {"BatchNorm", "LayerNorm"}
    rows = check.run_checks(checks)
    assert check.exit_status(rows) == 0, check.format_table(rows)


def test_check_runs_the_modules_in_the_dtype_it_checks():
    """--dtype float64/float16: the modules' parameters and buffers in that dtype, as a user
    runs them (GroupNorm refuses float32 parameters with float64 input)."""
    checks = check.default_checks(norms=["GroupNorm", "BatchNorm"])
    rows = check.run_checks(checks, dtypes=["float64", "float16"], steps=2)
    assert check.exit_status(rows) == 0, check.format_table(rows)
    assert {r["dtype"] for r in rows if r["counts"]} == {"float64", "float16"}


@pytest.mark.parametrize("name", list(registry.REGISTRY))
def test_every_registry_row_has_a_layer_a_builtin_and_a_float64_reference(name):
    """Each row: normtext's function and module, PyTorch's, and two float64 references that agree
    with PyTorch in float64 (the normalize step, and the harness's layer with state)."""
    case = registry.REGISTRY[name]
    assert callable(getattr(NF, case.functional)) and callable(getattr(TF, case.functional))
    shape = case.check_shape
    ours, theirs = case.module(nt, shape), case.module(nn, shape)
    assert type(ours).__name__ == type(theirs).__name__ and type(ours).__module__.startswith("normtext.")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 + 1
    m = case.reduction_size(shape)
    # the normalize step, no affine: the built-in with weight = 1 and bias = 0 is the same function
    want = case.call(TF, x, None, None).numpy()
    got = case.reference(x.numpy())
    assert np.abs(got - want).max() <= compare.tolerance("float64", m) * np.abs(want).max()
    # the harness's reference layer with state, against PyTorch's module
    groups = registry.group_count(shape[1]) if case.spec.grouped else None
    compare.compare_layers(compare.TorchLayer(theirs.double()), case.harness_reference(compare, shape),
                           shape, dtype="float64", spec=case.spec, groups=groups)


def test_registry_selects_rows_by_name_in_the_order_asked():
    assert [c.name for c in registry.norms(["LayerNorm", "BatchNorm"])] == ["LayerNorm", "BatchNorm"]
    assert [c.name for c in registry.norms()] == list(registry.REGISTRY)
    with pytest.raises(KeyError):
        registry.norms(["NoSuchNorm"])


@pytest.fixture(scope="module")
def tiny_results():
    return bench.run(norms=["LayerNorm", "BatchNorm"],
                     shapes={"LayerNorm": [(2, 8, 16)], "BatchNorm": [(4, 3, 5, 5)]},
                     repeats=3, min_time=1e-4, compile=False, bandwidth_bytes=2**20)


def _fused(norm):
    """The fused implementation's name where normtext.kernels times this norm here (Numba)."""
    return (bench.FUSED,) if bench.fused_implementation(registry.REGISTRY[norm]) else ()


def test_bench_rows_have_every_pass_and_implementation(tiny_results):
    rows = tiny_results["rows"]
    assert {(r["norm"], r["pass"], r["impl"]) for r in rows} == {
        (n, p, i) for n in ("LayerNorm", "BatchNorm") for p in bench.PASSES
        for i in ("built-in", "normtext eager") + _fused(n)}
    for r in rows:
        assert r["q1_s"] <= r["median_s"] <= r["q3_s"]
        assert r["ratio_q1"] <= r["ratio"] <= r["ratio_q3"]
        assert r["bytes"] > 0 and r["roofline_fraction"] > 0
        if r["impl"] == "built-in":
            assert r["ratio"] == 1.0


def test_bench_fused_column_where_the_kernels_have_the_norm(tiny_results):
    """LayerNorm has a fused kernel (a row and a first-call time), BatchNorm none."""
    assert bench.fused_implementation(registry.REGISTRY["BatchNorm"]) is None
    fused = [r for r in tiny_results["rows"] if r["impl"] == bench.FUSED]
    assert {r["norm"] for r in fused} == ({"LayerNorm"} if _fused("LayerNorm") else set())
    assert all(r["first_call_s"] > 0 for r in fused)
    assert all(r["first_call_s"] is None for r in tiny_results["rows"] if r["impl"] != bench.FUSED)
    assert "fused/bi" in bench.format_table(tiny_results)


JSON_KEYS = {"norm", "shape", "pass", "implementation", "ratio", "ratio_q1", "ratio_q3",
             "copy_fraction"}


def test_bench_json_records_and_provenance(tiny_results, tmp_path):
    path = tmp_path / "sub" / "bench.json"
    bench.write_json(tiny_results, str(path))
    data = json.loads(path.read_text())
    assert set(data) == {"provenance", "records"}
    for key in ("date", "cpu_model", "torch_threads", "torch", "numpy", "numba", "triton"):
        assert key in data["provenance"]
    records = data["records"]
    assert len(records) == len(tiny_results["rows"])
    keys = [(r["norm"], r["shape"], r["pass"], r["implementation"]) for r in records]
    assert len(set(keys)) == len(keys)  # one record per (norm, shape, pass, implementation)
    for r in records:
        assert JSON_KEYS <= set(r)
        assert r["pass"] in ("forward", "forward+backward")
        assert r["implementation"] in ("built-in", "eager", "compiled", "floor", "fused")
        assert r["ratio_q1"] <= r["ratio"] <= r["ratio_q3"] and r["copy_fraction"] > 0
        assert r["shape"] in ("2x8x16", "4x3x5x5")
        if r["implementation"] == "built-in":
            assert r["ratio"] == 1.0


def test_bench_json_names_every_implementation(compiled_results):
    names = {r["implementation"] for r in bench.records(compiled_results)}
    assert names == {"built-in", "eager", "compiled", "floor"}


def test_bench_command_line_json(tmp_path, capsys):
    path = tmp_path / "quick.json"
    assert bench.main(["--quick", "--no-compile", "--norms", "LayerNorm", "--repeats", "2",
                       "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["provenance"]["quick"] is True
    assert {r["implementation"] for r in data["records"]} == {"built-in", "eager", *_fused(
        "LayerNorm")}
    assert "fused/bi" in capsys.readouterr().out


def test_bench_traffic_counts_every_tensor_once():
    case = registry.REGISTRY["LayerNorm"]
    # forward: x and y (4 * 16 floats each) + gamma and beta (16 each)
    assert bench.traffic_bytes(case, (4, 16), 4, backward=False) == (2 * 64 + 32) * 4
    assert bench.traffic_bytes(case, (4, 16), 4, backward=True) == (5 * 64 + 64) * 4


def test_bench_table_structure(tiny_results):
    rows = bench.table_rows(tiny_results)
    assert len(rows) == 4  # 2 norms x 2 passes
    assert all("eager / built-in" in r and "built-in ms" in r for r in rows)
    assert all("compiled / built-in" not in r for r in rows)  # compile=False
    text = bench.format_table(tiny_results)
    lines = text.splitlines()
    assert lines[0].startswith("normtext.bench") and "copy bandwidth" in lines[1]
    header = next(i for i, l in enumerate(lines) if l.startswith("norm "))
    assert len(lines) == header + 2 + 4


def test_bench_results_files(tiny_results, tmp_path):
    bench.write(tiny_results, str(tmp_path / "r.json"))
    back = bench.read(str(tmp_path / "r.json"))
    for key in ("date", "torch", "device", "dtype"):
        assert key in back["environment"]
    bench.write(tiny_results, str(tmp_path / "r.csv"))
    text = (tmp_path / "r.csv").read_text().splitlines()
    assert len(text) == 1 + len(tiny_results["rows"]) and "env_torch" in text[0]


def test_bench_command_line(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert bench.main(["--quick", "--no-compile", "--norms", "RMSNorm", "--repeats", "2",
                       "--out", str(out)]) == 0
    assert "RMSNorm" in capsys.readouterr().out
    assert json.loads(out.read_text())["environment"]["quick"] is True


class _NotForThisDtype(nn.LayerNorm):
    def forward(self, x):
        if x.dtype == torch.float16:
            raise NotImplementedError("not implemented for 'Half'")
        return super().forward(x)


def test_check_skips_a_dtype_pytorch_lacks_but_fails_one_only_normtext_lacks():
    both = check.Check("LayerNorm", lambda: compare.TorchLayer(_NotForThisDtype(16)),
                       lambda: compare.TorchLayer(nn.LayerNorm(16)), shape=(8, 16),
                       spec=LAYER_NORM, builtin=lambda: compare.TorchLayer(_NotForThisDtype(16)))
    rows = check.run_checks([both], dtypes=["float16"])
    assert rows[0]["unsupported"] and not rows[0]["counts"]
    only_ours = check.Check("LayerNorm", both.candidate, both.reference, shape=(8, 16),
                            spec=LAYER_NORM, builtin=lambda: compare.TorchLayer(nn.LayerNorm(16)))
    rows = check.run_checks([only_ours], dtypes=["float16"])
    assert not rows[0]["unsupported"] and rows[0]["counts"] and not rows[0]["ok"]
    assert check.exit_status(rows) == 1


def test_bench_mxnet_rows_and_table():
    pytest.importorskip("mxnet")
    res = bench.run(norms=["LayerNorm"], shapes={"LayerNorm": [(2, 8, 16)]}, repeats=2,
                    min_time=1e-4, compile=False, bandwidth_bytes=2**20, mxnet=True)
    rows = res["mxnet_rows"]
    assert {(r["pass"], r["impl"]) for r in rows} == {
        (p, i) for p in bench.PASSES for i in bench.MXNET_IMPLS}
    text = bench.format_mxnet_table(res)
    assert "hybridize() does not apply" in text and len(text.splitlines()) == 3 + 2


@pytest.mark.parametrize("name", [c.name for c in registry.norms() if c.affine is not None])
def test_affine_step_is_the_last_step_of_the_norm(name):
    # the floor the benchmark times must be exactly the norm's affine step, with its
    # parameter layout: norm(x, w, b) == affine_step(norm(x, None, None), w, b)
    case = registry.REGISTRY[name]
    shape = case.check_shape
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w, b = registry.make_params(case, shape, dtype=torch.float64)
    builtin = registry.implementations(case)["built-in"]
    expected = builtin(x, w, b)
    got = bench.affine_step(case)(builtin(x, None, None), w, b)
    # float64, values of order 1: a few rounding errors of 1e-16 each
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def compiled_results():
    return bench.run(norms=["LayerNorm"], shapes={"LayerNorm": [(2, 8, 16)]}, repeats=2,
                     min_time=1e-4, compile=True, bandwidth_bytes=2**20, fused=False)


def test_bench_times_the_compiled_floor_beside_the_compiled_norm(compiled_results):
    impls = {(r["pass"], r["impl"]) for r in compiled_results["rows"]}
    assert impls == {(p, i) for p in bench.PASSES for i in bench.IMPLS + (bench.FLOOR,)}
    floor = [r for r in compiled_results["rows"] if r["impl"] == bench.FLOOR]
    assert all(r["compile_s"] is None and r["median_s"] > 0 for r in floor)
    rows = bench.table_rows(compiled_results)
    assert all("affine / built-in" in r and "compiled / built-in" in r for r in rows)
    assert "affine/bi" in bench.format_table(compiled_results)


def test_inductor_loops_counts_each_graph():
    case = registry.REGISTRY["LayerNorm"]
    shape = case.quick_shapes[0]  # large enough for Inductor to parallelize its loops
    norm = bench.inductor_loops(case, shape)
    floor = bench.inductor_loops(case, shape, bench.affine_step(case))
    # the statistics take loops of their own: more than the affine step's one
    assert floor["forward"] == 1 and norm["forward"] > floor["forward"]
    assert norm["backward"] >= 1 and floor["backward"] >= 1

