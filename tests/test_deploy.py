"""Deploy over SSH against a real OpenSSH sshd on loopback: host keys, verified atomic upload, smoke run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeprune.deploy.deployment import deploy_artifact
from edgeprune.devices.profile import load_device
from edgeprune.devices.remote import ssh
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import file_sha256
from tests.loopback_board import BOARD_NAME, SSHServer, edgeprune_main, write_board_profile

pytest_plugins = ["tests.board_fixtures"]  # the sshd and tiny_artifact fixtures


def _leftovers(workdir: Path) -> list[str]:
    return sorted(p.name for p in workdir.iterdir() if ".upload-" in p.name or ".old-" in p.name)


def _copy_artifact(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_unknown_host_key_is_refused_with_its_fingerprint_then_trusted(sshd: SSHServer, tmp_path: Path) -> None:
    board = write_board_profile(tmp_path, sshd, key_file=sshd.client_key, trusted=False)
    device = load_device(str(board.profile))
    with pytest.raises(EdgepruneError) as refused:
        ssh.connect(device)
    assert sshd.fingerprint in refused.value.message  # the same fingerprint `ssh-keygen -lf` prints
    assert "--trust-new-host" in (refused.value.hint or "")
    assert not board.known_hosts.exists()

    ssh.connect(device, trust_new_host=True).close()
    kind, blob = sshd.host_key_pub.read_text().split()[:2]
    assert board.known_hosts.read_text() == f"[127.0.0.1]:{sshd.port} {kind} {blob}\n"
    with ssh.connection(device) as conn:  # recorded: no flag needed any more
        assert conn.check("echo ok").stdout == "ok\n"


def test_changed_host_key_is_refused(sshd: SSHServer, tmp_path: Path) -> None:
    board = write_board_profile(tmp_path, sshd, key_file=sshd.client_key)
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    kind, blob = impostor.with_suffix(".pub").read_text().split()[:2]
    board.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")
    with pytest.raises(EdgepruneError, match="CHANGED") as refused:
        ssh.connect(load_device(str(board.profile)), trust_new_host=True)  # trusting new hosts never covers this
    assert sshd.fingerprint in refused.value.message


def test_deploy_cli_uploads_verifies_and_smoke_runs_over_ssh(
    sshd: SSHServer, tiny_artifact: Path, tmp_path: Path
) -> None:
    board = write_board_profile(tmp_path, sshd, key_file=sshd.client_key)
    proc = edgeprune_main("deploy", str(tiny_artifact), "--device", str(board.profile), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    manifest = json.loads((tiny_artifact / "manifest.json").read_text())

    destination = board.workdir / tiny_artifact.name
    assert result["remote_path"] == str(destination)
    assert result["host"] == f"{sshd.user}@127.0.0.1:{sshd.port}"
    assert result["verified_sha256"] is True
    assert sorted(result["files"]) == [
        "manifest.json", "model.onnx", "model.so", "reference_input.npy", "reference_output.npy"
    ]  # fmt: skip
    for name in result["files"]:  # the board is this machine: compare the bytes that landed
        assert (destination / name).read_bytes() == (tiny_artifact / name).read_bytes()
    assert result["smoke"]["output_shape"] == manifest["output"]["shape"]
    assert result["smoke"]["latency_ms"] > 0
    assert result["smoke"]["runtime_only"] is True  # ran with the TVM runtime library alone
    assert result["smoke"]["matches_reference"] is True  # PyTorch's output for the reference input, on the board
    assert _leftovers(board.workdir) == []

    commands = board.ssh_log.read_text().splitlines()
    smoke_lines = [line for line in commands if " smoke " in line]
    assert len(smoke_lines) == 1
    assert f"127.0.0.1 {sshd.port}]" in smoke_lines[0]  # $SSH_CONNECTION: executed in a session sshd served


def test_corrupted_artifact_is_refused_before_upload(sshd: SSHServer, tiny_artifact: Path, tmp_path: Path) -> None:
    board = write_board_profile(tmp_path / "board", sshd, key_file=sshd.client_key)
    broken = _copy_artifact(tiny_artifact, tmp_path / "broken")
    with open(broken / "model.so", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(EdgepruneError, match="sha256"):
        deploy_artifact(broken, load_device(str(board.profile)))
    assert not board.workdir.exists()


def test_wrong_output_on_the_board_fails_the_smoke_run(sshd: SSHServer, tiny_artifact: Path, tmp_path: Path) -> None:
    """A library that loads and runs but computes the wrong thing is not deployed."""
    board = write_board_profile(tmp_path / "board", sshd, key_file=sshd.client_key)
    wrong = _copy_artifact(tiny_artifact, tmp_path / "wrong")
    np.save(wrong / "reference_output.npy", np.load(wrong / "reference_output.npy") + 0.5)
    manifest = json.loads((wrong / "manifest.json").read_text())
    manifest["files"]["reference_output.npy"] = file_sha256(wrong / "reference_output.npy")
    (wrong / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgepruneError, match="differs from PyTorch's"):
        deploy_artifact(wrong, load_device(str(board.profile)))
    assert not (board.workdir / "wrong").exists()
    assert _leftovers(board.workdir) == []


def test_deploy_refuses_an_artifact_for_another_device(sshd: SSHServer, tiny_artifact: Path, tmp_path: Path) -> None:
    board = write_board_profile(tmp_path / "board", sshd, key_file=sshd.client_key)
    other = _copy_artifact(tiny_artifact, tmp_path / "other")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest.update(device="raspberry-pi-4", target={"kind": "llvm", "mtriple": "aarch64-linux-gnu"})
    (other / "manifest.json").write_text(json.dumps(manifest))
    proc = edgeprune_main("deploy", str(other), "--device", str(board.profile))
    assert proc.returncode == 2
    assert "compiled for device 'raspberry-pi-4'" in proc.stderr
    assert not board.workdir.exists()


def test_cli_unknown_host_exits_2_and_uploads_nothing(sshd: SSHServer, tiny_artifact: Path, tmp_path: Path) -> None:
    board = write_board_profile(tmp_path, sshd, key_file=sshd.client_key, trusted=False)
    proc = edgeprune_main("deploy", str(tiny_artifact), "--device", str(board.profile), "--no-smoke")
    assert proc.returncode == 2
    assert sshd.fingerprint in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not board.workdir.exists()


def test_interrupted_upload_keeps_the_previous_deployment(sshd: SSHServer, tiny_artifact: Path, tmp_path: Path) -> None:
    board = write_board_profile(tmp_path / "board", sshd, key_file=sshd.client_key)
    device = load_device(str(board.profile))
    first = deploy_artifact(tiny_artifact, device, smoke=False)
    destination = Path(first["remote_path"])
    before = {p.name: p.read_bytes() for p in destination.iterdir()}

    second = _copy_artifact(tiny_artifact, tmp_path / tiny_artifact.name)
    (second / "extra.bin").write_bytes(os.urandom(1 << 20))
    sent = 0

    def ctrl_c_midway(nbytes: int) -> None:
        nonlocal sent
        sent += nbytes
        if sent > 1 << 18:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        deploy_artifact(second, device, smoke=False, on_bytes=ctrl_c_midway)
    assert 0 < sent < sum(p.stat().st_size for p in second.iterdir())  # it really stopped part way
    assert {p.name: p.read_bytes() for p in destination.iterdir()} == before
    assert _leftovers(board.workdir) == []  # the staged folder was removed


def test_killed_deploy_never_touches_the_destination(sshd: SSHServer, tiny_artifact: Path, tmp_path: Path) -> None:
    """SIGKILL mid-upload (no cleanup can run): the destination keeps the previous deployment, whole."""
    board = write_board_profile(tmp_path / "board", sshd, key_file=sshd.client_key)
    device = load_device(str(board.profile))
    destination = Path(deploy_artifact(tiny_artifact, device, smoke=False)["remote_path"])
    before = {p.name: p.read_bytes() for p in destination.iterdir()}

    big = _copy_artifact(tiny_artifact, tmp_path / tiny_artifact.name)
    with open(big / "blob.bin", "wb") as fh:  # uploaded first (sorted), large enough to be caught mid-way
        fh.truncate(256 << 20)
    child = subprocess.Popen(
        [sys.executable, "-m", "edgeprune", "deploy", str(big), "--device", str(board.profile), "--no-smoke"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    partial = None
    deadline = time.monotonic() + 120
    while partial is None and time.monotonic() < deadline and child.poll() is None:
        staged = [p / "blob.bin" for p in board.workdir.glob(f".{big.name}.upload-*")]
        partial = next((p for p in staged if p.exists() and p.stat().st_size > 1 << 20), None)
        time.sleep(0.01)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    assert partial is not None, f"upload not caught mid-way: {child.stderr.read().decode() if child.stderr else ''}"
    assert partial.stat().st_size < 256 << 20
    assert {p.name: p.read_bytes() for p in destination.iterdir()} == before
    assert all(p.name.startswith(".") for p in board.workdir.iterdir() if p.name != destination.name)


def test_deploy_authenticates_through_ssh_agent(sshd: SSHServer, tiny_artifact: Path, tmp_path: Path) -> None:
    if shutil.which("ssh-agent") is None:
        pytest.skip("ssh-agent not installed")
    board = write_board_profile(tmp_path, sshd, key_file=None)  # no key file: the agent must provide it
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        env = dict(os.environ, SSH_AUTH_SOCK=str(socket_path))
        subprocess.run(["ssh-add", "-q", str(sshd.client_key)], check=True, env=env, capture_output=True)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SSH_AUTH_SOCK", str(socket_path))
            mp.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* fallback: only the agent holds a key
            result = deploy_artifact(tiny_artifact, load_device(str(board.profile)), smoke=False)
        assert (Path(result["remote_path"]) / "model.so").exists()
    finally:
        agent.terminate()
        agent.wait()


def test_unauthorized_key_fails_with_a_hint(sshd: SSHServer, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    board = write_board_profile(tmp_path, sshd, key_file=stranger)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SSH_AUTH_SOCK", raising=False)
        with pytest.raises(EdgepruneError, match="authentication") as failed:
            ssh.connect(load_device(str(board.profile)))
    assert "authorized_keys" in (failed.value.hint or "")


def test_device_without_ssh_section_is_refused(tiny_artifact: Path, tmp_path: Path) -> None:
    profile = tmp_path / f"{BOARD_NAME}.toml"
    profile.write_text(
        f'name = "{BOARD_NAME}"\n[target]\nkind = "llvm"\n[tracker]\nhost = "127.0.0.1"\nport = 9\nkey = "k"\n'
    )
    with pytest.raises(EdgepruneError, match="has no ssh settings"):
        deploy_artifact(tiny_artifact, load_device(str(profile)))
    proc = edgeprune_main("deploy", str(tiny_artifact), "--device", "local")
    assert proc.returncode == 2 and "'local' has no ssh settings" in proc.stderr
