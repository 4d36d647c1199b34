"""`edgeprune devices` and `edgeprune farm`: list and check boards, run the local RPC farm."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from edgeprune.cli.common import JsonOpt, console, print_json
from edgeprune.cli.emulating import timing_label
from edgeprune.devices import farm as farm_mod
from edgeprune.devices import profile, rpc

devices_app = typer.Typer(help="List device profiles and check that a device answers.", no_args_is_help=False)
farm_app = typer.Typer(
    help="The local farm: a TVM RPC tracker and servers on 127.0.0.1 for the 'local' device; or, with "
    "`up --tracker-only --host`, the tracker real boards register with."
)

PortOpt = Annotated[
    int,
    typer.Option(
        "--port",
        envvar="EDGEPRUNE_LOCAL_PORT",
        help="Tracker port on 127.0.0.1; $EDGEPRUNE_LOCAL_PORT sets it, as it does for the 'local' device.",
    ),
]


@devices_app.callback(invoke_without_command=True)
def devices(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List devices: the built-in 'local' first, then every profile in the profiles folder and the shipped boards.

    A profile that does not load is listed with its error; the others stay usable.
    """
    if ctx.invoked_subcommand is not None:
        return
    found, broken = profile.list_devices()
    if as_json:
        print_json([d.to_json() for d in found] + [{"source": str(b.path), "error": b.error} for b in broken])
        return
    table = Table(title=f"devices (profiles and LUTs: {profile.profiles_dir()}; shipped boards: {profile.SHIPPED_DIR})")
    for column in ("name", "kind", "target", "tracker", "key", "ssh"):
        table.add_column(column)
    for d in found:
        target = ", ".join(f"{k}={v}" for k, v in d.target.items() if k != "kind")
        ssh = f"{d.ssh.user}@{d.ssh.host}:{d.ssh.port}" if d.ssh else "-"
        kind = d.kind if d.timings_are_real else f"{d.kind} (timings not a board's)"
        table.add_row(d.name, kind, f"{d.target['kind']} ({target})", d.tracker, d.key, ssh)
    for b in broken:
        table.add_row(b.path.stem, "[red]broken[/]", escape(b.error), "-", "-", "-")
    console.print(table)


@devices_app.command("check")
def check(
    name: Annotated[str, typer.Argument(help="Device name or path to a profile .toml.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the tracker and a free server.")] = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """Request a session from the device's tracker, run a tiny kernel and the input filler tuning calls there.

    Prints the round trip and the board's health (CPU governor, throttle flags, temperature: what it exposes);
    fails (exit 2) where `profile` or `compile` could not measure on the device.
    """
    from edgeprune.devices import health

    device = profile.load_device(name)
    with device.serving():
        result = rpc.check_device(device, timeout=timeout)
    state = device.health()
    if as_json:
        print_json(
            {
                "device": device.name,
                "tracker": device.tracker,
                "key": device.key,
                "timings_are_real": device.timings_are_real,
                **result,
                "health": state,
                "warnings": health.warnings(state),
            }
        )
        return
    console.print(
        f"[green]ok[/] {device.name} via {device.tracker} key '{device.key}': "
        f"session {result['connect_ms']:.0f} ms, upload + run {result['roundtrip_ms']:.1f} ms"
        + timing_label(device.timings_are_real)
    )
    console.print(escape(health.summary_line(state)))
    for warning in health.warnings(state):
        console.print(f"[yellow]warning:[/] {escape(warning)}")


@devices_app.command("bench")
def bench(
    name: Annotated[str, typer.Argument(help="Device name or path to a profile .toml.")],
    samples: Annotated[int, typer.Option(help="How many samples of the fixed kernel to take (at least 6).")] = 30,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the tracker and a free server.")] = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """Measure the device's timing noise on a fixed kernel (a naive 128x128 matmul): the spread of SAMPLES
    measurements, the median's 95% interval, and about how many samples a +-1% interval needs.

    A board whose samples scatter widely needs more samples (verify takes more, up to a cap, before it says TOO
    CLOSE TO CALL) or a quieter set-up: the governor on 'performance', nothing else running, a cool board.
    """
    from edgeprune.devices import health
    from edgeprune.verify.noise import bench as bench_device
    from edgeprune.verify.noise import check_samples

    check_samples(samples)
    device = profile.load_device(name)
    with device.serving(), console.status(f"timing a fixed kernel {samples} times on {device.name}"):
        result = bench_device(device, samples, timeout)
    if as_json:
        print_json({**result, "warnings": health.warnings(result["health"])})
        return
    i = result["interval"]
    console.print(
        f"{device.name}: {result['kernel']}, {samples} samples of {result['number']} run(s): median "
        f"{result['median_ms']:.4f} ms, spread ±{result['spread'] * 100:.2f}% (half the IQR), range "
        f"{result['min_ms']:.4f}-{result['max_ms']:.4f} ms" + timing_label(device.timings_are_real)
    )
    console.print(
        f"95% interval of the median {i['low']:.4f}-{i['high']:.4f} ms (±{result['interval_half_width'] * 100:.2f}%); "
        f"a ±1% interval needs about {result['samples_for_1pct']} samples"
    )
    console.print(escape(health.summary_line(result["health"])))
    for warning in health.warnings(result["health"]):
        console.print(f"[yellow]warning:[/] {escape(warning)}")


@farm_app.command("up")
def up(
    servers: Annotated[int, typer.Option(help="How many RPC servers to start (profiling uses them in parallel).")] = 1,
    port: PortOpt = profile.LOCAL_DEFAULT_PORT,
    key: Annotated[
        str,
        typer.Option(
            envvar="EDGEPRUNE_LOCAL_KEY", help="Key the servers register under ($EDGEPRUNE_LOCAL_KEY sets it)."
        ),
    ] = profile.LOCAL,
    tracker_only: Annotated[
        bool,
        typer.Option(
            "--tracker-only",
            help="Start the tracker alone, for real boards to register with (`edgeprune board setup`); no servers.",
        ),
    ] = False,
    host: Annotated[
        str,
        typer.Option(
            help="Address the tracker listens on, with --tracker-only: this machine's address as the boards see it "
            "(0.0.0.0: every interface). The farm's servers always listen on 127.0.0.1."
        ),
    ] = farm_mod.HOST,
) -> None:
    """Start a tracker and N servers on 127.0.0.1; returns once all servers are free at the tracker.

    With --tracker-only --host ADDR, the tracker a LAN of boards registers with (`farm down` stops it too).
    """
    with console.status(f"starting tracker on {host}:{port}" + ("" if tracker_only else f" and {servers} server(s)")):
        state = farm_mod.up(servers=servers, port=port, key=key, host=host, tracker_only=tracker_only)
    if tracker_only:
        console.print(
            f"[green]tracker up[/] on {state.tracker}, pid {state.tracker_pid}; boards whose profile names it "
            f"(tracker.host as they see this machine, port {port}) register with `edgeprune board setup --device "
            f"NAME`; `edgeprune farm down --port {port}` stops it"
        )
        if host != farm_mod.HOST:
            console.print(
                "[yellow]note:[/] whoever reaches that port can use the boards registered there: keep it on a "
                "network you trust",
                highlight=False,
            )
        return
    console.print(f"[green]farm up[/] tracker {state.tracker}, {servers} server(s) under '{key}', pids {state.pids}")


@farm_app.command("status")
def status(port: PortOpt = profile.LOCAL_DEFAULT_PORT, as_json: JsonOpt = False) -> None:
    """Show the tracker's servers per key (free/busy) and the recorded PIDs; exit 1 when no tracker answers."""
    info = farm_mod.status(port)
    if as_json:
        print_json({k: info[k] for k in ("running", "tracker", "servers", "pids")})
    elif info["running"]:
        console.print(f"tracker {info['tracker']}, pids {info['pids']}")
        for key, counts in info["servers"].items():  # type: ignore[union-attr]
            console.print(f"  {key}: {counts['free']} free, {counts['busy']} busy")
    else:
        console.print(f"no tracker answers on {info['tracker']}")
    if not info["running"]:
        raise typer.Exit(1)


@farm_app.command("down")
def down(port: PortOpt = profile.LOCAL_DEFAULT_PORT) -> None:
    """Stop exactly the processes `farm up` started on this port; returns once they and their workers are gone."""
    stopped = farm_mod.down(port)
    if stopped["killed"]:
        console.print(
            f"[yellow]note:[/] pids {stopped['killed']} ignored SIGTERM for {farm_mod.STOP_TIMEOUT_S:.0f} s and "
            "were killed (SIGKILL)"
        )
    console.print(f"[green]farm down[/] stopped pids {stopped['pids']}: all exited")
