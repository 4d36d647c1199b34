"""FLOPs and parameter counts, predicted from channel counts or measured on a real module.

FLOPs here are multiply-accumulates of conv and linear layers (the convention of the pruning literature);
params are every parameter of the model. Both count a layer with its `edgeprune.network.Geometry`, the
description the latency table's signatures use too; the prediction reads widths from the channel groups,
the measurement from the module itself, and the tests check they agree after real surgery.
"""

from __future__ import annotations

from torch import nn

from edgeprune.network import sites, to_graph_module, widths
from edgeprune.pruning.groups.structure import Structure, layer_widths, norm_width


def predict(structure: Structure, counts: dict[str, int]) -> tuple[int, int]:
    """(flops, params) of the model when each group keeps `counts[group]` channels (missing = unpruned)."""
    flops = 0
    params = structure.other_params
    for name, (width_in, width_out) in layer_widths(structure, counts).items():
        macs, weights = structure.layers[name].cost(width_in, width_out)
        flops += macs
        params += weights
    for norm in structure.norms.values():
        if norm.affine:
            params += 2 * norm_width(norm, counts, structure)
    return flops, params


def measure(module: nn.Module, input_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(flops, params) of an actual module: each conv / linear call at the module's own widths."""
    traced = to_graph_module(module, input_shape)
    flops = sum(site.geometry.macs(*widths(traced.get_submodule(site.name))) for site in sites(traced, input_shape))
    return flops, sum(p.numel() for p in module.parameters())
