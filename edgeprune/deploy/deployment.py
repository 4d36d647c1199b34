"""`edgeprune deploy`: an artifact folder to `<remote_workdir>/<name>/` on a board, verified and smoke-tested.

Files go over SFTP into a hidden temp folder beside the destination; the board hashes them, runs one
inference from that folder, and only then is the folder renamed into place. So the destination only ever
holds a complete, verified artifact that ran on the board: an interrupted or failed deploy leaves the
previous deployment (or nothing) there, and removes its temp folder when it still can.
"""

from __future__ import annotations

import contextlib
import posixpath
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeprune.deploy.artifact import Upload, load_upload
from edgeprune.devices.base import Device
from edgeprune.devices.remote import ssh
from edgeprune.devices.remote.runner import RemoteRunner, install_runner
from edgeprune.errors import EdgepruneError

SMOKE_TIMEOUT_S = 600.0  # importing TVM and loading a big model on a slow board takes a while


def _noop(*_: Any) -> None:
    return None


def check_device_matches(artifact: Upload, device: Device) -> None:
    """An artifact built for another target would fail on the board in an obscure way, or run code tuned for
    another CPU: the same check `verify` makes, said up front."""
    from edgeprune.compile.artifacts import Artifact
    from edgeprune.verify.verifier import check_compatible

    try:
        check_compatible(Artifact(artifact.folder, artifact.manifest), device)
    except EdgepruneError as error:
        raise EdgepruneError(
            error.message, hint=f"{error.hint}; or pass --ignore-device-mismatch if the CPUs are the same"
        ) from error


def _upload(conn: ssh.BoardConnection, artifact: Upload, folder: str, on_bytes: Callable[[int], None]) -> None:
    for filename in artifact.hashes:
        sent = 0

        def advance(done: int, _total: int) -> None:
            nonlocal sent
            on_bytes(done - sent)
            sent = done

        conn.put(artifact.folder / filename, posixpath.join(folder, filename), progress=advance)


def _verify(runner: RemoteRunner, artifact: Upload, folder: str) -> None:
    remote = runner.call("hash", folder)["files"]
    if remote != artifact.hashes:
        bad = sorted(n for n in set(remote) | set(artifact.hashes) if remote.get(n) != artifact.hashes.get(n))
        raise EdgepruneError(
            f"sha256 on the board differs from this machine's for: {', '.join(bad)}",
            hint="the upload was corrupted (disk full on the board?); nothing was deployed, deploy again",
        )


def smoke_run(runner: RemoteRunner, device: Device, folder: str) -> dict[str, Any]:
    """Inferences on the board from `folder`, timed with the device's settings; refuses a wrong output shape or
    a wrong output."""
    timing = device.timing
    result = runner.call(
        "smoke",
        folder,
        *("--runtime", device.runtime_kind, "--number", str(timing.number), "--repeat", str(timing.repeat)),
        *("--min-repeat-ms", str(timing.min_repeat_ms), "--warmup", str(max(timing.warmup, 1))),
        timeout=SMOKE_TIMEOUT_S,
    )
    if not result["shape_ok"]:
        raise EdgepruneError(
            f"smoke run on the board: output shape {result['output_shape']}, the manifest says "
            f"{result['expected_shape']}"
        )
    if result["finite"] is False:
        raise EdgepruneError("smoke run on the board produced NaN or infinite outputs")
    if result["matches_reference"] is False:
        raise EdgepruneError(
            "smoke run on the board: the output for the artifact's reference input differs from PyTorch's "
            f"(max abs diff {result['reference_max_abs_diff']})",
            hint="the board's TVM runtime or CPU does not run this library correctly; check `board status`",
        )
    return result


def _swap_into_place(conn: ssh.BoardConnection, staged: str, destination: str, old: str) -> bool:
    """Rename `staged` to `destination`; an existing destination is moved aside first, then removed.

    Returns True when a previous deployment was replaced. If the second rename fails the previous
    deployment is put back, so the destination is never left empty by an error.
    """
    replaced = conn.exists(destination)
    if replaced:
        conn.rename(destination, old)
    try:
        conn.rename(staged, destination)
    except BaseException:
        if replaced:
            conn.rename(old, destination)
        raise
    if replaced:
        conn.remove_tree(old)
    return replaced


def deploy_artifact(
    folder: str | Path | Upload,
    device: Device,
    *,
    name: str | None = None,
    trust_new_host: bool = False,
    smoke: bool = True,
    ignore_device_mismatch: bool = False,
    on_stage: Callable[[str], None] = _noop,
    on_upload: Callable[[int], None] = _noop,
    on_bytes: Callable[[int], None] = _noop,
) -> dict[str, Any]:
    """Upload, verify, smoke-run and move into place; returns what `deploy --json` prints.

    `folder` may be an already loaded `Upload` (its files were hashed then; `name` is ignored).
    `on_upload(total_bytes)` is called as the upload starts, so a progress bar knows its length.
    """
    ssh.require_ssh(device)
    artifact = folder if isinstance(folder, Upload) else load_upload(folder, name)
    if not ignore_device_mismatch:
        check_device_matches(artifact, device)
    on_stage(f"connecting to {device.name}")
    with ssh.connection(device, trust_new_host=trust_new_host) as conn:
        runner = install_runner(conn, device)
        conn.makedirs(runner.workdir)
        token = secrets.token_hex(4)
        destination = posixpath.join(runner.workdir, artifact.name)
        staged = posixpath.join(runner.workdir, f".{artifact.name}.upload-{token}")
        conn.sftp.mkdir(staged)
        started = time.perf_counter()
        try:
            on_stage(f"uploading {len(artifact.hashes)} files to {conn.label}")
            on_upload(artifact.total_bytes)
            _upload(conn, artifact, staged, on_bytes)
            uploaded = time.perf_counter()
            on_stage("checking sha256 on the board")
            _verify(runner, artifact, staged)
            smoke_result = None
            if smoke:
                on_stage("smoke run on the board")
                smoke_result = smoke_run(runner, device, staged)
            replaced = _swap_into_place(
                conn, staged, destination, posixpath.join(runner.workdir, f".{artifact.name}.old-{token}")
            )
        except BaseException:
            with contextlib.suppress(Exception):
                conn.remove_tree(staged)
            raise
    return {
        "device": device.name,
        "host": conn.label,
        "remote_path": destination,
        "files": artifact.hashes,
        "bytes": artifact.total_bytes,
        "verified_sha256": True,
        "replaced": replaced,
        "upload_s": uploaded - started,
        "smoke": smoke_result,
        "timings_are_real": device.timings_are_real,  # False: the smoke run's latency is an emulator's
    }
