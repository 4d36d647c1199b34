"""The blocked channel layout (NCHW[x]c): convolutions whose channels divide the block run on data laid out as
(N, C/x, H, W, x) with weights prepacked as (O/x, I/x, KH, KW, x, x), the layout ONNX Runtime's CPU provider
and TVM's own x86/ARM schedules use: the innermost block is one vector register of output channels, so the
tuned kernel vectorises without gathers. Measured in bench/results/runtime.md (issue 36).

Convolutions the block does not fit (a pruned width such as 11 or 24 channels with a 16 block, a 1-channel
stem, grouped ones) stay NCHW: Relax's ConvertLayout leaves them alone and inserts the layout transforms between
the two kinds. ConvertLayout leaves depthwise convolutions NCHW too (their one input channel per group does not
divide the block), which put two layout-transform kernels around every depthwise layer of a depthwise-separable
network; `_block_depthwise` blocks them itself (channels are independent, so any block that divides them fits).

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
    if groups == in_channels == out_channels:  # depthwise: blocked by `_block_depthwise`
        return PLAIN_KERNEL if in_channels % block else BLOCKED_KERNEL
    if in_channels % block or out_channels % block or (in_channels // groups) % block:
        return PLAIN_KERNEL
    return REGROUPED_KERNEL if (out_channels // groups) % block else BLOCKED_KERNEL


def _regrouped(data: Any, kernel: Any, attrs: Any, out_dtype: str) -> Any:
    """A blocked grouped convolution TOPI's conv2d_NCHWc cannot compute (outputs per group not a multiple of
    the block): the data and weights unblocked, a grouped NCHW convolution, the result blocked again."""
    from tvm import topi

    x = topi.layout_transform(data, attrs.data_layout, PLAIN)
    w = topi.layout_transform(kernel, attrs.kernel_layout, "OIHW")
    strides, padding, dilation = _window(attrs)
    y = topi.nn.group_conv2d_nchw(x, w, strides, padding, dilation, int(attrs.groups), out_dtype)
    return topi.layout_transform(y, PLAIN, attrs.out_layout)


def _window(attrs: Any) -> tuple[list[int], ...]:
    """A convolution's strides, padding and dilation as plain ints, as the TE computes here take them."""
    return tuple([int(v) for v in values] for values in (attrs.strides, attrs.padding, attrs.dilation))


def _depthwise_blocked(data: Any, kernel: Any, attrs: Any, out_dtype: str) -> Any:
    """A depthwise convolution on NCHW[x]c data with (C/x, 1, KH, KW, 1, x) weights (what `_block_depthwise`
    emits): each output channel is its own input channel, so the block is the innermost, vectorised loop.
    TOPI declares `depthwise_conv2d_NCHWc` without a generic compute, hence this one."""
    from tvm import te, topi

    strides, padding, dilation = _window(attrs)
    batch, chunks, height, width, block = (int(v) for v in data.shape)
    kernel_h, kernel_w = int(kernel.shape[2]), int(kernel.shape[3])
    top, left, bottom, right = padding
    padded = topi.nn.pad(data, [0, 0, top, left, 0], [0, 0, bottom, right, 0], name="pad")
    out_h = (height + top + bottom - dilation[0] * (kernel_h - 1) - 1) // strides[0] + 1
    out_w = (width + left + right - dilation[1] * (kernel_w - 1) - 1) // strides[1] + 1
    ry, rx = te.reduce_axis((0, kernel_h), name="ry"), te.reduce_axis((0, kernel_w), name="rx")
    return te.compute(
        (batch, chunks, out_h, out_w, block),
        lambda n, c, y, x, b: te.sum(
            padded[n, c, y * strides[0] + ry * dilation[0], x * strides[1] + rx * dilation[1], b].astype(out_dtype)
            * kernel[c, 0, ry, rx, 0, b].astype(out_dtype),
            axis=[ry, rx],
        ),
        name="depthwise_conv2d_NCHWc",
    )


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
    if attrs.kernel_layout == f"OIHW1i{block}o":
        return bb.call_te(
            _depthwise_blocked, call.args[0], call.args[1], attrs, call.ty.dtype, primfunc_name_hint="dwconv2d_NCHWc"
        )
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

    mod = _clamps_as_relax_ops(relax.transform.FoldConstant()(mod))
    mod = relax.transform.ConvertLayout({"relax.nn.conv2d": [f"NCHW{block}c", f"OIHW{block}i{block}o"]})(mod)
    mod = relax.transform.Normalize()(mod)
    mod = relax.transform.FoldConstant()(mod)
    mod = _cancel_transforms(_block_depthwise(mod, block))
    # TOPI's conv2d_NCHWc asks for a current target and does not use it: the compute is the same for every
    # device, whose own schedule comes later from tuning
    with tvm.target.Target({"kind": "llvm"}):
        return relax.transform.LegalizeOps({"relax.nn.conv2d": _legalize_conv2d})(mod)


def _block_depthwise(mod: Any, block: int) -> Any:
    """Every depthwise convolution whose channels `block` divides (with its bias and activation, the epilogue
    FuseOps puts in its kernel) rewritten to run blocked between two layout transforms; `_cancel_transforms`
    then drops the transforms that undo the neighbouring convolutions' own. Weights prepacked here."""
    import numpy as np
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard

    conv = is_op("relax.nn.conv2d")(wildcard(), is_const())
    biased = is_op("relax.add")(conv, is_const())
    low, high = is_const(), is_const()  # ReLU6 as ONNX Clip comes in as maximum then minimum
    patterns = (
        is_op("relax.nn.relu")(biased)
        | is_op("relax.clip")(biased, wildcard(), wildcard())
        | is_op("relax.minimum")(is_op("relax.maximum")(biased, low), high),
        biased,
        conv,
    )

    def depthwise(call: Any) -> bool:
        shape = [int(v) for v in call.args[0].ty.shape]
        weight = call.args[1].value.numpy().shape
        return (
            len(shape) == 4
            and call.attrs.data_layout == "NCHW"
            and call.attrs.kernel_layout == "OIHW"
            and int(call.attrs.groups) == shape[1] == weight[0]
            and weight[1] == 1
            and shape[1] % block == 0
        )

    def blocked_conv(call: Any) -> Any:
        weight = call.args[1].value.numpy()  # (C, 1, KH, KW) -> (C/x, 1, KH, KW, 1, x)
        channels, _, kernel_h, kernel_w = weight.shape
        packed = weight.reshape(channels // block, block, 1, kernel_h, kernel_w, 1).transpose(0, 2, 3, 4, 5, 1)
        data = relax.op.layout_transform(call.args[0], lambda n, c, h, w: (n, c // block, h, w, c % block))
        return relax.op.nn.conv2d(
            data,
            relax.const(np.ascontiguousarray(packed)),
            call.attrs.strides,
            call.attrs.padding,
            call.attrs.dilation,
            int(call.attrs.groups),
            f"NCHW{block}c",
            f"OIHW1i{block}o",
            f"NCHW{block}c",
            call.attrs.out_dtype,
        )

    def blocked_bias(call: Any, inner: Any) -> Any:
        bias = call.args[1].value.numpy()
        if bias.ndim != 4 or bias.shape[1] % block or bias.shape[0] * bias.shape[2] * bias.shape[3] != 1:
            return None
        packed = bias.reshape(1, bias.shape[1] // block, block, 1, 1).transpose(0, 1, 3, 4, 2)
        return relax.op.add(inner, relax.const(np.ascontiguousarray(packed)))

    def unblocked(expr: Any, dtype: str) -> Any:
        # relax.op.layout_transform reads its input's dtype, which a call not yet normalized lacks: the
        # attributes come from one built on a typed placeholder
        placeholder = relax.Var("blocked", relax.TensorType([1, 1, 1, 1, block], dtype))
        template = relax.op.layout_transform(placeholder, lambda n, c, h, w, b: (n, c * block + b, h, w))
        return relax.Call(template.op, [expr], template.attrs)

    def rewrite(orig: Any, matched: dict[Any, Any]) -> Any:
        found = matched[conv]
        if not depthwise(found):
            return orig
        result = blocked_conv(found)
        if biased in matched:
            result = blocked_bias(matched[biased], result)
            if result is None:
                return orig
        if orig.op.name in ("relax.nn.relu", "relax.clip"):
            result = relax.Call(orig.op, [result, *orig.args[1:]], orig.attrs)
        elif orig.op.name == "relax.minimum":
            if any(matched[bound].value.numpy().size != 1 for bound in (low, high)):
                return orig
            result = relax.op.minimum(relax.op.maximum(result, matched[low]), matched[high])
        return unblocked(result, found.args[0].ty.dtype)

    for pattern in patterns:
        mod = _rewrite_functions(mod, pattern, rewrite)
    return relax.transform.Normalize()(mod)


def _cancel_transforms(mod: Any) -> Any:
    """A layout transform applied to another's output that restores the other's input (NCHW[x]c -> NCHW ->
    NCHW[x]c) replaced by that input: the pair is a copy, two kernels and a tensor's worth of memory traffic."""
    import tvm
    from tvm import relax, sym, tirx
    from tvm.relax.dpl import is_op, wildcard

    source = wildcard()
    inner = is_op("relax.layout_transform")(source)
    outer = is_op("relax.layout_transform")(inner)

    def identity(first: Any, second: Any, shape: list[int]) -> bool:
        analyzer = sym.Analyzer()
        indices = [tirx.Var(f"i{axis}", "int64") for axis in range(len(shape))]
        for index, extent in zip(indices, shape, strict=True):
            analyzer.bind(index, tvm.ir.Range.from_min_extent(0, extent))
        mapped = second.map_indices(first.map_indices(indices, analyzer), analyzer)
        return len(mapped) == len(indices) and all(
            analyzer.can_prove_equal(got, index) for got, index in zip(mapped, indices, strict=True)
        )

    def rewrite(orig: Any, matched: dict[Any, Any]) -> Any:
        data = matched[source]
        shape = data.ty.shape
        if shape is None or not isinstance(orig.ty.shape, relax.ShapeExpr):
            return orig
        dims = [int(v) for v in shape]
        if dims != [int(v) for v in orig.ty.shape]:
            return orig
        first, second = matched[inner].attrs.index_map, orig.attrs.index_map
        return data if identity(first, second, dims) else orig

    mod = _rewrite_functions(mod, outer, rewrite)
    return relax.transform.DeadCodeElimination()(relax.transform.Normalize()(mod))


def _clamps_as_relax_ops(mod: Any) -> Any:
    """The ONNX importer emits Clip (ReLU6) as TIR calls (`call_tir` of TOPI's maximum and minimum with a
    scalar), which ConvertLayout cannot see through: every blocked convolution followed by ReLU6 got a layout
    transform to NCHW and back around its clamp. As Relax's maximum and minimum they follow the layout."""
    from tvm import relax
    from tvm.relax.dpl import is_call_tir, is_const, wildcard

    data, bound = wildcard(), is_const()
    ops = {"maximum": relax.op.maximum, "minimum": relax.op.minimum}
    for name, op in ops.items():

        def rewrite(orig: Any, matched: dict[Any, Any], op: Any = op) -> Any:
            if matched[bound].value.numpy().size != 1 or list(matched[data].ty.shape) != list(orig.ty.shape):
                return orig
            return op(matched[data], matched[bound])

        mod = _rewrite_functions(mod, is_call_tir(name, [data, bound]), rewrite)
    return relax.transform.DeadCodeElimination()(relax.transform.Normalize()(mod))


def _rewrite_functions(mod: Any, pattern: Any, rewrite: Any) -> Any:
    """`mod` with `rewrite` applied (by `rewrite_call`) wherever `pattern` matches in each of its Relax
    functions: every pass here rewrites the whole module, the TIR functions it holds are left as they are."""
    from tvm import relax
    from tvm.relax.dpl import rewrite_call

    for gvar, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mod[gvar] = rewrite_call(pattern, rewrite, func)
    return mod
