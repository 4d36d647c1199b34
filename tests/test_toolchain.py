"""Exporting a library: TVM's per-function "Scope Saving" warnings are dropped, anything else on stderr kept."""

from __future__ import annotations

import os

import pytest

from edgeprune.devices.native_log import NOISE, without_native_lines


def test_native_noise_is_dropped_and_other_lines_kept(capfd: pytest.CaptureFixture[str]) -> None:
    with without_native_lines(NOISE):
        os.write(2, f"[06:17:56] /project/src/runtime/vm/executable.cc:276: {NOISE}:\n".encode() * 3)
        os.write(2, b"ld: a real problem\n")
    os.write(2, b"after\n")  # stderr is back where it was
    err = capfd.readouterr().err
    assert NOISE not in err
    assert err == "ld: a real problem\nafter\n"
