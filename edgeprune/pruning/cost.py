"""FLOPs and parameter counts, predicted from channel counts or measured on a real module.

FLOPs here are multiply-accumulates of conv and linear layers (the convention of the pruning literature);
params are every parameter of the model. The prediction and the measurement use the same convention, and the
tests check they agree after real surgery.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.pruning.groups import Structure, layer_widths, norm_width


def predict(structure: Structure, counts: dict[str, int]) -> tuple[int, int]:
    """(flops, params) of the model when each group keeps `counts[group]` channels (missing = unpruned)."""
    flops = 0
    params = structure.other_params
    for name, (width_in, width_out) in layer_widths(structure, counts).items():
        layer = structure.layers[name]
        per_output = layer.kernel * (1 if layer.channelwise else width_in // layer.groups)
        flops += width_out * per_output * layer.pixels
        params += width_out * per_output + (width_out if layer.bias else 0)
    for norm in structure.norms.values():
        if norm.affine:
            params += 2 * norm_width(norm, counts, structure)
    return flops, params


def measure(module: nn.Module, input_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(flops, params) of an actual module, by running one input through it."""
    flops = 0

    def count(layer: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
        nonlocal flops
        if isinstance(layer, nn.Conv2d):
            per_output = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
            flops += out.shape[1] * out.shape[2] * out.shape[3] * per_output
        else:
            flops += layer.in_features * layer.out_features

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, *input_shape))
    finally:
        module.train(was_training)
        for hook in hooks:
            hook.remove()
    return flops, sum(p.numel() for p in module.parameters())
