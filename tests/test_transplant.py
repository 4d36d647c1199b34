"""Which tuned kernels count as one family for `compile`'s schedule transplants (`tvmx.transplant.family_key`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgeprune.network import CONV
from edgeprune.profiling import single_layer
from edgeprune.profiling.signature import Family
from edgeprune.tvmx import transplant
from tests.fake_device import FakeDevice

pytest.importorskip("tvm")


def _workload(kernel: int, stride: int, cin: int = 8, cout: int = 8) -> Any:
    """The tunable kernel of one conv + bias + ReLU on a 16x16 map, padded to keep `kernel`'s centre."""
    family = Family(
        CONV, (kernel, kernel), (stride, stride), (kernel // 2,) * 2, (1, 1), 16, 16, epilogue=("bias", "relu")
    )
    device = FakeDevice(
        name="fake", description="", target={"kind": "llvm"}, tracker_host="127.0.0.1", tracker_port=9190,
        key="fake", profiles_root=Path("."),
    )  # fmt: skip
    _, relax_model = single_layer.to_relax(family, cin, cout)
    return transplant.task_module(relax_model.mod, device)


def test_channel_counts_share_a_family_and_kernel_size_or_stride_do_not() -> None:
    key = transplant.family_key
    base = key(_workload(3, 1))
    assert key(_workload(3, 1, cin=4, cout=12)) == base  # a pruned shape of the same layer
    assert key(_workload(5, 1)) != base  # 5x5 (padding 2) is not the 3x3's family
    assert key(_workload(3, 2)) != key(_workload(3, 3))  # nor are strides 2 and 3 one family
