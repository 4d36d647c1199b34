"""The blocked channel layout (NCHW[x]c): convolutions whose channels divide the block run on data laid out as
(N, C/x, H, W, x) with weights prepacked as (O/x, I/x, KH, KW, x, x), the layout ONNX Runtime's CPU provider
and TVM's own x86/ARM schedules use: the innermost block is one vector register of output channels, so the
tuned kernel vectorises without gathers. Measured in bench/results/runtime.md (issue 36).

Convolutions the block does not fit (a pruned width such as 11 or 24 channels with a 16 block, a 1-channel
stem, depthwise and grouped ones) stay NCHW: Relax's ConvertLayout leaves them alone and inserts the layout
transforms between the two kinds.

The `tuning.layout` setting's names (NCHW, NCHWc, NCHW<x>c) and how a device resolves them are the device
layer's (devices/tuning.py); this module is what TVM does with a resolved one.
"""

from __future__ import annotations

from typing import Any

from edgeprune.devices.tuning import PLAIN, block_of

PLAIN_KERNEL, BLOCKED_KERNEL, REGROUPED_KERNEL = "plain", "blocked", "regrouped"


def kernel_kind(layout: str, in_channels: int, out_channels: int, groups: int) -> str:
    """Which kernel a convolution compiles to in a concrete `layout`. Relax's ConvertLayout blocks it where
    the block divides its input and output channels and its inputs per group (so depthwise, and widths such
    as 6 or 24 with an 8 or 16 block, stay `plain` NCHW). TOPI's conv2d_NCHWc also needs the outputs per
    group blocked: a grouped conv without them is `regrouped` (unblocked around a grouped NCHW conv, in one
    kernel). Checked against ConvertLayout in tests/test_blocked_layout.py. One family (a layer at its pruned
    widths) can hold several kinds, whose kernels are different TIR: the profiler anchors each on its own."""
    block = block_of(layout)
    if block is None or groups < 1 or in_channels % groups or out_channels % groups:
        return PLAIN_KERNEL
    if in_channels % block or out_channels % block or (in_channels // groups) % block:
        return PLAIN_KERNEL
    return REGROUPED_KERNEL if (out_channels // groups) % block else BLOCKED_KERNEL


def _regrouped(data: Any, kernel: Any, attrs: Any, out_dtype: str) -> Any:
    """A blocked grouped convolution TOPI's conv2d_NCHWc cannot compute (outputs per group not a multiple of
    the block): the data and weights unblocked, a grouped NCHW convolution, the result blocked again."""
    from tvm import topi

    x = topi.layout_transform(data, attrs.data_layout, PLAIN)
    w = topi.layout_transform(kernel, attrs.kernel_layout, "OIHW")
    strides, padding, dilation = ([int(v) for v in values] for values in (attrs.strides, attrs.padding, attrs.dilation))
    y = topi.nn.group_conv2d_nchw(x, w, strides, padding, dilation, int(attrs.groups), out_dtype)
    return topi.layout_transform(y, PLAIN, attrs.out_layout)


def _legalize_conv2d(bb: Any, call: Any) -> Any:
    """Blocked (5-D) convolutions as TOPI's conv2d_NCHWc (or `_regrouped`); the stock legalization refuses
    blocked layouts and still handles the 4-D ones."""
    import tvm
    from tvm import topi

    attrs = call.attrs
    if len(call.args[0].ty.shape) != 5:
        return tvm.ir.Op.get("relax.nn.conv2d").get_attr("FLegalize")(bb, call)
    block = int(call.args[1].ty.shape[-1])
    out_channels = int(call.args[1].ty.shape[0]) * block
    if attrs.groups > 1 and (out_channels // attrs.groups) % block:
        return bb.call_te(
            _regrouped, call.args[0], call.args[1], attrs, call.ty.dtype, primfunc_name_hint="conv2d_regrouped"
        )
    return bb.call_te(
        topi.nn.conv2d_NCHWc,
        call.args[0],
        call.args[1],
        attrs.strides,
        attrs.padding,
        attrs.dilation,
        attrs.data_layout,
        attrs.out_layout,
        call.ty.dtype,
        primfunc_name_hint="conv2d_NCHWc",
    )


def to_blocked(mod: Any, block: int) -> Any:
    """A Relax module (BatchNorm decomposed, not yet legalized) with its convolutions in NCHW{block}c where
    the channels allow, legalized; the weights' layout transforms are folded into constants (prepacked)."""
    import tvm
    from tvm import relax

    mod = relax.transform.ConvertLayout({"relax.nn.conv2d": [f"NCHW{block}c", f"OIHW{block}i{block}o"]})(mod)
    mod = relax.transform.Normalize()(mod)
    mod = relax.transform.FoldConstant()(mod)
    # TOPI's conv2d_NCHWc asks for a current target and does not use it: the compute is the same for every
    # device, whose own schedule comes later from tuning
    with tvm.target.Target({"kind": "llvm"}):
        return relax.transform.LegalizeOps({"relax.nn.conv2d": _legalize_conv2d})(mod)
