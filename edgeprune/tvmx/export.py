"""PyTorch -> ONNX -> onnx-simplifier -> TVM Relax: the one import path every stage compiles through.

Profiling, compiling and verifying all go through `to_relax`, so the kernels measured for the latency table
are the kernels that ship. BatchNorm is folded by the ONNX exporter in eval mode (Relax has no folding pass).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.devices.tuning import PLAIN, block_of
from edgeprune.errors import EdgepruneError
from edgeprune.tvmx import layout as layouts

INPUT_NAME = "input"
OUTPUT_NAME = "output"
OPSET = 17


@dataclass
class RelaxModel:
    """A legalized Relax module ready for task extraction and build, plus the ONNX it came from."""

    mod: Any
    onnx_bytes: bytes
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


def to_onnx(module: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """Export in eval mode with a fixed batch-1 shape and simplify; returns the serialized ONNX model."""
    import onnx
    import onnxsim

    module = module.eval()
    example = torch.zeros(*input_shape)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                (example,),
                buffer,
                dynamo=False,  # the dynamo exporter needs onnxscript; the TorchScript one folds BN as well
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=OPSET,
                do_constant_folding=True,
            )
        except Exception as exc:  # noqa: BLE001 - the exporter raises many types
            raise EdgepruneError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    model = onnx.load_from_string(buffer.getvalue())
    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise EdgepruneError("onnx-simplifier could not validate the simplified model")
    return simplified.SerializeToString()


def onnx_to_relax(onnx_bytes: bytes, layout: str = PLAIN) -> Any:
    """Import into Relax with weights bound as constants, convert the convolutions to `layout` (a blocked
    NCHW[x]c where their channels allow, see `tvmx.layout`), then legalize (MetaSchedule needs TIR functions)."""
    import onnx
    from tvm import relax
    from tvm.relax.frontend import onnx as relax_onnx

    block = block_of(layout)
    mod = relax_onnx.from_onnx(onnx.load_from_string(onnx_bytes), keep_params_in_input=False)
    mod = relax.transform.DecomposeOpsForInference()(mod)
    if block is not None:
        mod = layouts.to_blocked(mod, block)
    return relax.pipeline.get_pipeline("zero")(mod)


def to_relax(module: nn.Module, input_shape: tuple[int, ...], layout: str = PLAIN) -> RelaxModel:
    """`input_shape` includes the batch dimension, e.g. (1, 3, 32, 32); `layout` is the device's
    `tuning.layout` (the same for the latency table's entries and the shipped network)."""
    onnx_bytes = to_onnx(module, input_shape)
    with torch.no_grad():
        output_shape = tuple(module.eval()(torch.zeros(*input_shape)).shape)
    return RelaxModel(onnx_to_relax(onnx_bytes, layout), onnx_bytes, tuple(input_shape), output_shape)


def check_against_torch(
    lib: Any, module: nn.Module, input_shape: tuple[int, ...], rtol: float = 1e-4, atol: float = 1e-4
) -> float:
    """Run the built library on this host (a native target) and compare with PyTorch; returns max |diff|."""
    import tvm
    from tvm import relax

    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = module.eval()(x).numpy()
    vm = relax.VirtualMachine(lib, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x.numpy())).numpy()
    diff = float(np.max(np.abs(got - expected)))
    if not np.allclose(got, expected, rtol=rtol, atol=atol):
        raise EdgepruneError(f"TVM output differs from PyTorch by up to {diff:.3g} (tolerance {atol})")
    return diff
