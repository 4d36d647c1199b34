"""The blocked NCHWc layout (tvmx/layout.py) and the per-layer TVM vs ONNX Runtime table (tools/compare_layers.py):
real imports and builds on this host, untuned (0 trials), so cheap."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeprune.devices.tuning import TuningConfig
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import ModelBundle

TOOL = Path(__file__).resolve().parents[1] / "tools" / "compare_layers.py"


def load_tool() -> object:
    spec = importlib.util.spec_from_file_location("compare_layers", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def small_net() -> nn.Module:
    """A stem whose 3 input channels cannot be blocked, two 16-channel convs that can (one depthwise), an
    11-channel pruned-looking conv that cannot, and a linear head."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16),
        nn.Conv2d(16, 16, 1),
        nn.ReLU(),
        nn.Conv2d(16, 11, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(11, 4),
    ).eval()


def test_blocked_layout_converts_only_the_convs_whose_channels_divide_the_block() -> None:
    import tvm

    from edgeprune.tvmx.export import check_against_torch, to_relax

    module = small_net()
    relax_model = to_relax(module, (1, 3, 8, 8), "NCHW8c")
    kernels = [g.name_hint for g in relax_model.mod.get_global_vars()]
    blocked = [k for k in kernels if "conv2d_NCHWc" in k]
    assert len(blocked) == 2, f"the 16-channel depthwise and 1x1 convs are blocked: {kernels}"
    assert sum("conv2d" in k for k in kernels) == 4, f"every conv has its kernel: {kernels}"
    lib = tvm.compile(relax_model.mod, target=tvm.target.Target({"kind": "llvm"}))
    assert check_against_torch(lib, module, (1, 3, 8, 8)) < 1e-4
    plain = to_relax(module, (1, 3, 8, 8)).mod.script()
    assert "NCHWc" not in plain


@pytest.mark.parametrize("layout", ["NCHW8", "nchw8c", "NCHW0c", "NHWC"])
def test_a_malformed_layout_is_refused_with_the_setting_named(layout: str) -> None:
    with pytest.raises(EdgepruneError, match="tuning.layout"):
        TuningConfig(layout=layout)
    cpu, gpu = {"kind": "llvm"}, {"kind": "cuda"}
    assert TuningConfig.from_table({"layout": "NCHW16c"}).conv_layout(cpu, 8) == "NCHW16c"
    assert TuningConfig(layout="NCHWc").conv_layout(cpu, 8) == "NCHW8c", "NCHWc: blocked by the device's step"
    assert TuningConfig(layout="NCHWc").conv_layout(gpu, 32) == "NCHW", "a GPU keeps NCHW"


def test_compare_layers_maps_every_layer_to_a_tvm_kernel_and_an_ort_node(
    isolated_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from edgeprune.compile.compiler import compile_model
    from edgeprune.devices.profile import local_device

    torch.manual_seed(0)
    bundle = ModelBundle(small_net(), (3, 8, 8), 4, {"arch": "small"})
    art = tmp_path / "art"
    result = compile_model(bundle, local_device(), art, trials_per_task=0, tuning=TuningConfig(layout="NCHW8c"))
    assert result.artifact.manifest["tuning"]["layout"] == "NCHW8c"
    tool = load_tool()
    table = tool.compare(art, threads=1, rounds=1)  # type: ignore[attr-defined]
    rows = table["layers"]
    assert [r["op"] for r in rows] == ["Conv", "Conv", "Conv", "Conv", "Gemm"]
    assert rows[0]["macs"] == 16 * 8 * 8 * 3 * 9 and rows[1]["macs"] == 16 * 8 * 8 * 9  # depthwise: 1 in/group
    assert len({r["tvm_kernel"] for r in rows}) == len(rows), "each layer has its own kernel"
    assert "NCHWc" in rows[2]["tvm_kernel"] and "NCHWc" not in rows[3]["tvm_kernel"]
    assert all(r["tvm_us"] > 0 for r in rows)
    assert all(r["ort_us"] > 0 for r in rows if r["op"] == "Conv"), "ORT's conv nodes map to their layers"
    assert all(r["trials"] is None for r in rows), "built untuned: no database"
    assert table["tvm_total_us"] > 0 and table["ort_total_us"] > 0
    text = tool.markdown(table, "small")  # type: ignore[attr-defined]
    assert "| **end to end** |" in text and rows[0]["layer"] in text


def test_compare_layers_cli_refuses_a_folder_that_is_no_artifact(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(TOOL), str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode != 0
    assert "error:" in result.stderr and "manifest" in result.stderr
    assert not list(tmp_path.iterdir()), "nothing written"


def test_ort_nodes_fused_or_renamed_map_to_their_layer() -> None:
    tool = load_tool()
    owner = {"/c/Conv": "/c/Conv", "/c/Conv_output_0": "/c/Conv", "/r/Relu": "/c/Conv", "/r/Relu_output_0": "/c/Conv"}
    assert tool.ort_layer("/r/Relu_output_0_nchwc", owner) == "/c/Conv"  # type: ignore[attr-defined]
    assert tool.ort_layer("/c/Conv", owner) == "/c/Conv"  # type: ignore[attr-defined]
    assert tool.ort_layer("ReorderOutput_token_3", owner) is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("cin", "cout", "groups", "kind"),
    [
        (8, 8, 1, "blocked"),
        (6, 8, 1, "plain"),
        (8, 6, 1, "plain"),
        (3, 8, 1, "plain"),
        (8, 16, 2, "blocked"),
        (8, 8, 4, "plain"),
        (8, 8, 8, "blocked"),  # depthwise: blocked by layout._block_depthwise, not by ConvertLayout
        (6, 6, 6, "plain"),  # depthwise the block does not divide
        (16, 8, 4, "regrouped"),  # 2 outputs per group: ConvertLayout blocks it, conv2d_NCHWc cannot compute it
    ],
)
def test_which_convs_are_blocked_is_what_convert_layout_does(cin: int, cout: int, groups: int, kind: str) -> None:
    """The profiler plans its anchors from `kernel_kind` before anything is built: it must say what Relax
    does; every kind computes what PyTorch does."""
    import tvm

    from edgeprune.tvmx.export import check_against_torch, to_relax
    from edgeprune.tvmx.layout import kernel_kind

    module = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, groups=groups), nn.ReLU()).eval()
    relax_model = to_relax(module, (1, cin, 6, 6), "NCHW4c")
    kernels = [g.name_hint for g in relax_model.mod.get_global_vars() if "conv2d" in g.name_hint]
    assert kernel_kind("NCHW4c", cin, cout, groups) == kind
    names = {"blocked": "conv2d_NCHWc", "regrouped": "conv2d_regrouped", "plain": "conv2d_add"}
    assert len(kernels) == 1 and names[kind] in kernels[0], kernels
    assert kernel_kind("NCHW", cin, cout, groups) == "plain"
    lib = tvm.compile(relax_model.mod, target=tvm.target.Target({"kind": "llvm"}))
    assert check_against_torch(lib, module, (1, cin, 6, 6)) < 1e-4


def test_depthwise_separable_relu6_blocks_run_without_layout_transforms_between_them() -> None:
    """MobileNet-style blocks (1x1, depthwise 3x3, 1x1, each with BatchNorm, ReLU6 between): ConvertLayout
    alone left the depthwise convs NCHW and could not see through the importer's ReLU6 (TIR maximum/minimum),
    so each of them sat between two layout transforms. Now the network is transformed in once and out once."""
    import tvm

    from edgeprune.tvmx.export import check_against_torch, to_relax

    def block(cin: int, hidden: int, cout: int, stride: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]

    module = nn.Sequential(*block(8, 16, 8, 1), *block(8, 16, 16, 2), nn.ReLU()).eval()
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):  # not the identity BatchNorm starts as: folding must show
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 1.5)
    relax_model = to_relax(module, (1, 8, 8, 8), "NCHW4c")
    kernels = [g.name_hint for g in relax_model.mod.get_global_vars()]
    assert sum("dwconv2d_NCHWc" in k for k in kernels) == 2, kernels
    assert sum("conv2d" in k and "NCHWc" not in k for k in kernels) == 0, f"every conv is blocked: {kernels}"
    calls = relax_model.mod["main"].script().count("layout_transform")
    assert calls == 2, f"one transform in, one out: {calls} in {kernels}"
    lib = tvm.compile(relax_model.mod, target=tvm.target.Target({"kind": "llvm"}))
    assert check_against_torch(lib, module, (1, 8, 8, 8)) < 1e-4


def test_each_family_is_anchored_per_kernel_kind() -> None:
    """lenet5's 6-channel conv at a 4 block: its full width runs NCHW, its 4-channel entries blocked; each
    kind takes its schedule from a tuned shape of its own kind (the network's layer where it is of that kind)."""
    from edgeprune.models.zoo import build
    from edgeprune.profiling.grid import anchors, plan
    from edgeprune.profiling.signature import LayerExtractor

    module = build("lenet5", in_channels=1, input_hw=(28, 28))
    layers = LayerExtractor().layers(module, (1, 28, 28))
    planned = list(plan(layers, 4).values())
    anchored = anchors(layers, planned, "NCHW4c")
    network = {(layer.family.key, layer.in_channels, layer.out_channels) for layer in layers}
    assert {entry.anchor_key("NCHW4c") for entry in planned} == set(anchored)
    assert {kind for _, kind in anchored} == {"blocked", "plain"}, "some of lenet5's entries are blocked at 4"
    for key, anchor in anchored.items():
        assert anchor.anchor_key("NCHW4c") == key
        same_kind = [e for e in planned if e.anchor_key("NCHW4c") == key]
        is_layer = (anchor.family.key, anchor.in_channels, anchor.out_channels) in network
        assert is_layer or anchor.macs == max(e.macs for e in same_kind)
    assert set(anchors(layers, planned, "NCHW")) == {(e.family.key, "plain") for e in planned}


def test_a_latency_table_measured_at_another_channel_step_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device's channel step picks the block (NCHWc -> NCHW<step>c): a table measured before the step
    changed holds other kernels than the device now compiles, so `load` refuses it with the re-profile hint
    rather than reuse it (issue 36 weighed step 8 against 16 on AVX-512: every table would have gone stale)."""
    from edgeprune.devices.profile import load_device
    from edgeprune.profiling import lut

    monkeypatch.setenv("EDGEPRUNE_PROFILES_DIR", str(tmp_path / "profiles"))
    monkeypatch.setenv("EDGEPRUNE_STATE_DIR", str(tmp_path / "state"))
    board = load_device("raspberry-pi-4")  # NEON: step 4, so NCHWc is NCHW4c; no TVM import for its target
    lut.LatencyTable.new(board).save()
    assert lut.LatencyTable.load(board) is not None
    monkeypatch.setattr(type(board), "channel_step", property(lambda _self: 8))
    with pytest.raises(EdgepruneError, match="measured NCHW4c kernels.*now compiles with layout NCHW8c") as failure:
        lut.LatencyTable.load(board)
    assert failure.value.hint
