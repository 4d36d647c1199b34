"""The emulated Raspberry Pi: aarch64 code cross-compiled here runs under qemu-user, reached like a board.

Real processes throughout: qemu through binfmt_misc, a real sshd on 127.0.0.1, TVM's tracker and an RPC server
started over SSH by `edgeprune board bootstrap` on the emulated Python. Times measured here are qemu's and the
tests check they are labelled so; they say nothing about a Pi.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from edgeprune.devices import emulation
from edgeprune.devices.base import Device
from edgeprune.devices.profile import load_device
from edgeprune.devices.remote import server as board
from edgeprune.errors import EdgepruneError
from edgeprune.profiling.grid import plan
from edgeprune.profiling.lut import lut_path
from edgeprune.profiling.profiler import profile_model
from edgeprune.profiling.signature import LayerExtractor
from tests.loopback_board import EMULATED_PI, edgeprune_cli, edgeprune_main, write_emulated_profile
from tests.test_profiling_rpc import FAST, allow_second_tuning, narrow_tiny

pytest_plugins = ["tests.emulated_fixtures"]
pytestmark = pytest.mark.arm

ZOO_ARGS = ["lenet5", "--input-shape", "1x16x16", "--classes", "10"]


def test_missing_root_filesystem_is_a_clear_error_naming_the_build_command(
    isolated_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolated_env.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "empty-cache"))
    try:
        proc = edgeprune_main("devices", "check", EMULATED_PI)
    finally:
        isolated_env.delenv("EDGEPRUNE_CACHE_DIR")
    assert proc.returncode == 2, proc.stderr
    assert "root filesystem is not built" in proc.stderr and emulation.BUILD_COMMAND in proc.stderr
    assert load_device(EMULATED_PI).timings_are_real is False


def test_zoo_model_cross_compiled_tuned_on_the_emulated_board_matches_pytorch(
    emulated_pi: Device, tmp_path: Path
) -> None:
    out = tmp_path / "lenet"
    compiled = edgeprune_cli(
        "compile", *ZOO_ARGS, "--device", emulated_pi.name, "--trials", "1", "-o", str(out), "--json", timeout=600
    )
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    result = json.loads(compiled.stdout)
    assert result["trials"] > 0 and result["failed_trials"] == 0  # MetaSchedule measured on the board
    assert (out / "model.so").read_bytes()[:4] == b"\x7fELF" and (out / "model.so").read_bytes()[18] == 0xB7  # aarch64

    verified = edgeprune_main("verify", str(out), "--device", emulated_pi.name, "--json")
    assert verified.returncode == 0, verified.stderr[-3000:]
    report = json.loads(verified.stdout)
    assert report["outputs_match"] is True and report["max_abs_diff"] <= 1e-4
    assert report["timings_are_real"] is False  # stored in verify.json too: never a Pi's latency
    assert json.loads((out / "verify.json").read_text())["timings_are_real"] is False
    table = edgeprune_main("verify", str(out), "--device", emulated_pi.name)
    assert "emulated" in table.stderr

    deployed = edgeprune_main("deploy", str(out), "--device", emulated_pi.name, "--json")
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    smoke = json.loads(deployed.stdout)["smoke"]
    assert smoke["matches_reference"] is True and smoke["machine"] == "aarch64"
    assert json.loads(deployed.stdout)["timings_are_real"] is False


def test_profile_resumes_after_the_emulated_server_is_killed(emulated_pi: Device) -> None:
    allow_second_tuning()
    bundle = narrow_tiny()
    server = board.status(emulated_pi)
    assert server["running"] is True

    def kill_server(phase: str, done: int, _total: int) -> None:
        if phase == "entries" and done == 2:
            os.killpg(server["pid"], signal.SIGKILL)  # the server and its workers: qemu processes on this machine

    with pytest.raises(EdgepruneError, match="profiling stopped"):
        profile_model(bundle, emulated_pi, on_progress=kill_server, **FAST)
    saved = json.loads(lut_path(emulated_pi).read_text())
    planned = plan(LayerExtractor().layers(bundle.module, bundle.input_shape), emulated_pi.channel_step, FAST["grid"])
    assert 2 <= len(saved["entries"]) < len(planned)
    assert saved["emulated"] is True  # the table says whose times these are
    assert lut_path(emulated_pi).parent.name == emulated_pi.name  # its own folder, never a real board's

    restarted = edgeprune_main("board", "bootstrap", "--device", emulated_pi.name, "--json")
    assert restarted.returncode == 0, restarted.stderr
    report = profile_model(bundle, emulated_pi, **FAST)
    entries = json.loads(lut_path(emulated_pi).read_text())["entries"]
    assert set(entries) >= set(planned)
    assert report.entries_reused == len(saved["entries"]) and report.entries_measured == len(planned) - len(
        saved["entries"]
    )  # nothing lost, nothing measured twice


def _beside(emulated_pi: Device, folder: Path, name: str, workdir: Path, python: str) -> Path:
    """A profile for the running emulated board (its tracker and sshd) with a key, work dir and Python of its own."""
    assert emulated_pi.ssh is not None
    profile = write_emulated_profile(folder, name, port=emulated_pi.tracker_port)
    ssh = emulated_pi.ssh
    profile.write_text(
        profile.read_text()
        + f"""
[ssh]
host = "127.0.0.1"
port = {ssh.port}
user = "{ssh.user}"
key_file = "{ssh.key_file}"
known_hosts = "{ssh.known_hosts}"

[remote]
workdir = "{workdir}"
python = "{python}"
"""
    )
    return profile


def test_a_board_with_another_tvm_is_refused_naming_both_versions(
    emulated_pi: Device, emulated_rootfs: emulation.RootFS, tmp_path: Path
) -> None:
    """The board's Python sees a TVM package whose version is 0.26.0 (the real package, its version file
    rewritten, in front of the root's on PYTHONPATH): bootstrap must stop before starting any server."""
    overlay = tmp_path / "overlay" / "tvm"
    shutil.copytree(emulated_rootfs.site_packages / "tvm", overlay, ignore=shutil.ignore_patterns("lib"))
    (overlay / "lib").symlink_to(emulated_rootfs.site_packages / "tvm" / "lib")
    (overlay / "_version.py").write_text("__version__ = version = '0.26.0'\n")
    wrapper = tmp_path / "old-tvm-python"
    wrapper.write_text(f'#!/bin/sh\nexport PYTHONPATH="{overlay.parent}"\nexec "{emulated_rootfs.python}" "$@"\n')
    wrapper.chmod(0o755)
    profile = _beside(emulated_pi, tmp_path, "emulated-old-tvm", tmp_path / "old-tvm-home", str(wrapper))
    proc = edgeprune_main("board", "bootstrap", "--device", str(profile))
    assert proc.returncode == 2, proc.stderr
    assert "0.26.0" in proc.stderr and "0.27.0.post1" in proc.stderr
    assert not (tmp_path / "old-tvm-home" / ".edgeprune" / "rpc_server.json").exists()


def test_setup_installs_tvm_on_an_emulated_pi_whose_python_has_none(
    emulated_pi: Device, emulated_rootfs: emulation.RootFS, tmp_path: Path
) -> None:
    """The emulated Pi's Python without its site packages (`-S`: no TVM, no numpy, no pip) stands for a board
    nobody set up: `board setup` fetches the aarch64 wheels here, uploads them, installs them into a venv in the
    board's work dir under qemu, starts the server from there, and `devices check` passes on it."""
    workdir = tmp_path / "bare-home"
    profile = _beside(emulated_pi, tmp_path, "emulated-bare", workdir, f"{emulated_rootfs.python} -S")
    setup = edgeprune_main("board", "setup", "--device", str(profile), "--json", "--timeout", "120")
    assert setup.returncode == 0, setup.stderr
    result = json.loads(setup.stdout)
    try:
        installed = result["installed"]
        assert installed["previous_tvm"] is None and installed["platform"].endswith("_aarch64-cp311")
        assert (result["machine"], result["tvm"], installed["venv"]) == (
            "aarch64",
            installed["tvm"],
            str(workdir / "venv"),
        )
        check = edgeprune_main("devices", "check", str(profile), "--json")
        assert check.returncode == 0, check.stderr
        assert json.loads(check.stdout)["timings_are_real"] is False
    finally:
        stopped = edgeprune_main("board", "stop", "--device", str(profile))
    assert stopped.returncode == 0, stopped.stderr


def test_board_status_and_devices_check_label_the_emulation(emulated_pi: Device) -> None:
    status = edgeprune_main("board", "status", "--device", emulated_pi.name, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["running"] is True
    check = edgeprune_main("devices", "check", emulated_pi.name)
    assert check.returncode == 0, check.stderr
    assert "emulated" in check.stderr


def test_run_end_to_end_on_the_emulated_board(emulated_pi: Device, tmp_path: Path) -> None:
    """Train, profile, prune, compile, measure and deploy lenet5 at 16x16 (at 8x8 the VM's fixed cost under qemu
    leaves nothing to prune: 0.8x was below the smallest reachable latency); every latency is qemu's."""
    run_dir = tmp_path / "run"
    args = [
        "lenet5", "--data", "digits", "--input-shape", "1x16x16",
        "--method", "global", "--target", "0.8x", "--train-epochs", "1", "--finetune-epochs", "1",
        "--trials", "1", "--max-rounds", "2", "--limit", "300",
        "--device", emulated_pi.name, "--run-dir", str(run_dir), "--json",
    ]  # fmt: skip
    proc = edgeprune_cli("run", *args, timeout=1500)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: ran, budget missed (qemu's timing noise)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["timings_are_real"] is False
    if proc.returncode == 0:
        assert summary["deploy"]["smoke"]["matches_reference"] is True


def test_rpc_server_of_the_emulated_board_listens_on_loopback_only(emulated_pi: Device) -> None:
    """TVM's server listens in a worker process of its group (its own session): check every socket of the group."""
    pid = board.status(emulated_pi)["pid"]
    group = {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _process_group(p) == pid}
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines()
    lines = [line for line in listening if any(f"pid={member}," in line for member in group)]
    assert lines and all(line.split()[3].startswith("127.0.0.1:") for line in lines), listening


def _process_group(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rpartition(")")[2].split()[2])
    except (OSError, ValueError, IndexError):
        return None
