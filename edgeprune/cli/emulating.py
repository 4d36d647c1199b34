"""`edgeprune board emulate`: build and power the emulated aarch64 board (a Raspberry Pi 4 stand-in under qemu)."""

from __future__ import annotations

from typing import Annotated

import typer

from edgeprune.cli.common import JsonOpt, console, emit

emulate_app = typer.Typer(
    help="The emulated aarch64 board: build its root filesystem once, then power it on (tracker + sshd, "
    "127.0.0.1 only). Its latencies are qemu's, never a board's."
)
EmulatedOpt = Annotated[str, typer.Option("--device", "-d", help="An emulated device profile.")]
DEFAULT_EMULATED = "emulated-pi"


def _emulated(name: str):  # noqa: ANN202 - EmulatedDevice; imported late (TVM-free CLI start-up)
    from edgeprune.devices.emulated import EmulatedDevice
    from edgeprune.devices.profile import load_device
    from edgeprune.errors import EdgepruneError

    device = load_device(name)
    if not isinstance(device, EmulatedDevice):
        raise EdgepruneError(f"device '{device.name}' is of kind '{device.kind}', not an emulated board")
    return device


@emulate_app.command("build")
def build_cmd(as_json: JsonOpt = False) -> None:
    """Build the board's arm64 Debian root filesystem (python3, numpy, TVM's aarch64 wheels) into the user's
    cache; does nothing when it is built already. Needs root once (binfmt_misc, mmdebstrap)."""
    from edgeprune.devices import emulation

    info = emulation.build_rootfs(log=lambda text: console.print(f"[dim]{text}[/dim]"))
    verb = "built" if info["built"] else "already built"
    took = f"; {info['build_seconds']} s" if info["built"] else ""
    emit(
        info,
        as_json,
        f"root filesystem {verb}: {info['path']} ({info['size_mb']} MB; Python {info['python']}, "
        f"TVM {info['tvm']}, numpy {info['numpy']} on {info['machine']}{took})",
    )


@emulate_app.command("up")
def up_cmd(device: EmulatedOpt = DEFAULT_EMULATED, as_json: JsonOpt = False) -> None:
    """Power the board on: its tracker and its sshd on 127.0.0.1 (each unless it runs already). Then
    `edgeprune board bootstrap` starts its RPC server over SSH, as on a real board."""
    from edgeprune.devices import emulated_board

    profile = _emulated(device)
    result = emulated_board.power_on(profile)
    started = ", ".join(result["started"]) or "nothing (all ran already)"
    emit(
        result,
        as_json,
        f"{profile.name}: tracker {result['tracker']}, ssh 127.0.0.1:{result['ssh_port']}; started {started}",
        f"next: edgeprune board bootstrap --device {profile.name}",
    )


@emulate_app.command("down")
def down_cmd(device: EmulatedOpt = DEFAULT_EMULATED, as_json: JsonOpt = False) -> None:
    """Stop the board's tracker and sshd (exactly the PIDs `up` recorded; `board stop` first for its server)."""
    from edgeprune.devices import emulated_board

    stopped = emulated_board.power_off(_emulated(device))
    emit({"stopped": stopped}, as_json, f"stopped {', '.join(map(str, stopped)) or 'nothing'}")


@emulate_app.command("status")
def status_cmd(device: EmulatedOpt = DEFAULT_EMULATED, as_json: JsonOpt = False) -> None:
    """The root filesystem, binfmt, the board's processes and the servers its tracker lists."""
    from edgeprune.devices import emulated_board

    result = emulated_board.status(_emulated(device))
    emit(result, as_json, *(f"{key}: {value}" for key, value in result.items()))


def timing_label(timings_are_real: bool) -> str:
    """What every printed latency of an emulated device carries: qemu's time says nothing about the board."""
    return "" if timings_are_real else " [yellow](emulated: qemu on this machine, not the board's speed)[/]"
