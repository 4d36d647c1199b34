"""`edgeprune deploy` and `edgeprune board`: artifacts to boards over SSH, RPC servers on boards."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgeprune.cli.common import ArtifactsArg, DeviceOpt, JsonOpt, TrustOpt, console, emit, options
from edgeprune.cli.emulating import timing_label

if TYPE_CHECKING:
    from edgeprune.devices.base import Device

app = typer.Typer()
board_app = typer.Typer(help="Start, stop and inspect the TVM RPC server on a board over SSH.")


@app.command("deploy")
def deploy_cmd(
    artifacts: ArtifactsArg,
    device: DeviceOpt,
    name: Annotated[
        str | None, typer.Option(help="Folder name on the board (default: the artifact folder's name).")
    ] = None,
    smoke: Annotated[
        bool,
        typer.Option(
            "--smoke/--no-smoke",
            help="Run the model on the board before moving it into place: timed, reference output checked.",
        ),
    ] = True,
    ignore_device_mismatch: Annotated[
        bool, typer.Option("--ignore-device-mismatch", help="Deploy an artifact compiled for another device.")
    ] = False,
    trust_new_host: TrustOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Upload an artifact folder to the board over SSH (verified, atomic) and run a smoke inference there."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    import edgeprune as ep

    dev = ep.device(device)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("preparing", total=None)
        result = ep.deploy(
            artifacts,
            dev,
            name=name,
            trust_new_host=trust_new_host,
            smoke=smoke,
            ignore_device_mismatch=ignore_device_mismatch,
            on_progress=lambda step, done, total: progress.update(
                task, description=step, completed=done, total=total or None
            ),
        )
    emit(result, as_json, lambda: _deploy_lines(result))


def _deploy_lines(result: dict[str, Any]) -> list[str]:
    """Where the artifact went, and how its smoke run on the board went."""
    lines = [
        f"[green]deployed[/] {len(result['files'])} files ({result['bytes'] / 1e6:.2f} MB) to "
        f"{result['host']}:{result['remote_path']}, sha256 verified on the board"
        + (" (replaced the previous deployment)" if result["replaced"] else "")
    ]
    smoke = result["smoke"]
    if smoke:
        lines.append(
            f"smoke run on the board: output {smoke['output_shape']}, "
            f"{smoke['latency_ms']:.3g} ms (median of {len(smoke['latency_runs_ms'])}), "
            f"TVM {smoke['tvm']}, reference output {'matches' if smoke.get('matches_reference') else 'not checked'}"
            + timing_label(result["timings_are_real"])
        )
    return lines


def _print_warnings(result: dict[str, Any]) -> None:
    for warning in result.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


TrackerOpt = Annotated[
    str | None, typer.Option(help="Tracker HOST:PORT as the board must dial it (default: the profile's tracker).")
]
RegisterTimeoutOpt = Annotated[float, typer.Option(help="Seconds to wait for the tracker to list the server.")]


def server_options(
    tracker: TrackerOpt = None, timeout: RegisterTimeoutOpt = 60.0, trust_new_host: TrustOpt = False
) -> dict[str, Any]:
    """How `board bootstrap` and `board setup` start the board's server, as the library's functions take it."""
    return {"tracker": tracker, "timeout": timeout, "trust_new_host": trust_new_host}


def _start(title: str, run: Callable[..., dict[str, Any]], device: Device, start: dict[str, Any]) -> dict[str, Any]:
    """`run(device, **start)` under a spinner that shows its stages; its warnings printed after."""
    with console.status(title) as spinner:
        result = run(device, **start, on_stage=spinner.update)
    _print_warnings(result)
    return result


def _server_line(result: dict[str, Any], tracker: str) -> str:
    """The board's RPC server as `bootstrap` and `setup` leave it."""
    verb = "already running" if result["already_running"] else "started"
    return (
        f"[green]{verb}[/] rpc_server pid {result['pid']} on {result['host']} (Python {result['python']}, "
        f"TVM {result['tvm']}, {result['machine']}); tracker {tracker} lists {result['registered']} "
        f"server(s) under '{result['key']}'"
    )


@board_app.command("bootstrap")
@options("start", server_options)
def bootstrap_cmd(device: DeviceOpt, start: dict[str, Any], as_json: JsonOpt = False) -> None:
    """Start the TVM RPC server on the board, registered with the device's tracker."""
    from edgeprune.devices.profile import load_device
    from edgeprune.devices.remote import server

    profile = load_device(device)
    result = _start("bootstrapping", server.bootstrap, profile, start)
    emit(result, as_json, _server_line(result, profile.tracker))


@board_app.command("setup")
@options("start", server_options)
def setup_cmd(device: DeviceOpt, start: dict[str, Any], as_json: JsonOpt = False) -> None:
    """Make a board ready over SSH: check its Python; where TVM's runtime is missing (or another release), install
    this machine's from here (wheels fetched here, uploaded by SFTP, into a venv in the board's work dir: the board
    needs no internet); then start its RPC server as `board bootstrap` does."""
    from edgeprune.devices.profile import load_device
    from edgeprune.devices.remote import setup

    profile = load_device(device)
    result = _start("setting up", setup.setup, profile, start)
    installed = result["installed"]
    done = (
        f"[green]installed[/] TVM {installed['tvm']} into {installed['venv']} ({installed['wheels']} wheels for "
        f"{installed['platform']}, {installed['uploaded_bytes'] / 1e6:.1f} MB uploaded)"
        if installed
        else f"the board's Python already has TVM {result['tvm']}: nothing to install"
    )
    emit(result, as_json, done, _server_line(result, profile.tracker))


@board_app.command("stop")
def stop_cmd(device: DeviceOpt, trust_new_host: TrustOpt = False, as_json: JsonOpt = False) -> None:
    """Stop the RPC server that `board bootstrap` started (exactly the PID it recorded)."""
    from edgeprune.devices.profile import load_device
    from edgeprune.devices.remote import server

    result = server.stop(load_device(device), trust_new_host=trust_new_host)
    stopped = (
        f"nothing to stop on {result['host']}: {result['reason']}"
        if result["stopped"] is None
        else f"[green]stopped[/] rpc_server pid {result['stopped']} on {result['host']}"
    )
    emit(result, as_json, stopped)


@board_app.command("status")
def status_cmd(device: DeviceOpt, trust_new_host: TrustOpt = False, as_json: JsonOpt = False) -> None:
    """Show whether the board's RPC server runs and is registered at the tracker (exit 1 when it does not run)."""
    from edgeprune.devices.profile import load_device
    from edgeprune.devices.remote import server

    profile = load_device(device)
    result = server.status(profile, trust_new_host=trust_new_host)
    state = f"[green]running[/] pid {result['pid']}" if result["running"] else "[yellow]not running[/]"
    listed = (
        f"tracker {profile.tracker} is unreachable"
        if result["registered"] is None
        else f"tracker {profile.tracker} lists {result['registered']} server(s) under '{profile.key}'"
    )
    emit(result, as_json, f"{result['host']}: rpc_server {state}; {listed}")
    if not result["running"]:
        raise typer.Exit(1)
