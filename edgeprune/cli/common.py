"""What every command shares: the stderr console, JSON output, error exit codes, common options."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from edgeprune.errors import EdgepruneError

# Human output (tables, progress) goes to stderr so that `--json` on stdout stays machine-readable.
console = Console(stderr=True)

EXIT_ERROR = 2  # bad input or a failure; exit 1 is kept for "ran fine, but the budget does not hold"
EXIT_INTERNAL = 3  # a bug in edgeprune (an exception it did not expect)
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), the shell convention

DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        "-d",
        help="Device: 'local', a profile name (`edgeprune devices` lists them), or a .toml profile path.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON object on stdout instead of tables.")]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-new-host",
        help="Accept an SSH host key seen for the first time and record it in the profile's known_hosts.",
    ),
]
# What names a model, for every command that takes one.
ShapeOpt = Annotated[str | None, typer.Option("--input-shape", help="Model input CxHxW (zoo / .py models).")]
ClassesOpt = Annotated[int | None, typer.Option("--classes", help="Number of classes (zoo / .py models).")]
WidthOpt = Annotated[float, typer.Option("--width", help="Width multiplier of a zoo model.")]
MinKeepOpt = Annotated[float, typer.Option("--min-keep", help="Each layer keeps at least this share.")]
ModelArg = Annotated[str, typer.Argument(help="Zoo name, path/to/file.py:factory, or a saved model file.")]
# How long tuning may take, for every command that tunes (profile, estimate --measure, compile, run, sweep).
TrialsOpt = Annotated[
    int | None,
    typer.Option(
        "--trials",
        help="MetaSchedule trials per new task, measured on the device; tasks the device's tuning database already "
        "holds are reused (with tuning.transplant, a compile transplants a tuned layer's schedule to its new "
        "shapes). 0 (compile only) builds the untuned default schedules. Default: the device's [tuning] table "
        "(profile_trials when profiling, trials when compiling; 32 and 16 without one).",
    ),
]
MinutesOpt = Annotated[
    float | None,
    typer.Option(
        "--tuning-minutes",
        help="Stop tuning after this many minutes, keeping what was measured; default: the device's "
        "tuning.minutes (none).",
    ),
]
TargetMsOpt = Annotated[float | None, typer.Option("--target-ms", help="Latency budget in ms on the device.")]
ArtifactsArg = Annotated[Path, typer.Argument(help="Artifact folder written by `edgeprune compile`.")]
RepeatOpt = Annotated[
    int | None,
    typer.Option(
        "--repeat", help="Timed repeats of each measurement (median and spread); default: the device's timing.repeat."
    ),
]

VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose",
        help="Show TVM's own output (MetaSchedule's tuning tables and trials) here too; it always goes to the log.",
    ),
]

NoWaitOpt = Annotated[
    bool,
    typer.Option(
        "--no-wait",
        help="Fail at once when another process is writing the device's latency table (default: wait its turn).",
    ),
]


Command = TypeVar("Command", bound=Callable[..., None])


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def emit(result: Any, as_json: bool, *lines: str | Callable[[], Iterable[Any]]) -> None:
    """How a command ends: with --json, `result` as JSON on stdout; else `lines` for people (stderr), each a text
    or a function that renders some (tables, texts from the result), called only then."""
    if as_json:
        print_json(result)
        return
    for line in lines:
        for shown in line() if callable(line) else [line]:
            console.print(shown, highlight=False)


def options(name: str, build: Callable[..., Any]) -> Callable[[Command], Command]:
    """Give a command a group of options declared once, in `build`'s parameters: they join the command's own
    (parsed and listed in --help where its parameter `name` stands), and the command gets `build(**values)` as
    `name`.

    Typer reads a command's options from its signature, so options that several commands share would otherwise
    be listed again, in full, in each of them.
    """
    group = inspect.signature(build, eval_str=True).parameters

    def decorate(command: Command) -> Command:
        own = inspect.signature(command, eval_str=True)
        merged: list[inspect.Parameter] = []
        for param in own.parameters.values():
            merged.extend(group.values() if param.name == name else [param])

        @functools.wraps(command)
        def parsed(**values: Any) -> None:
            grouped = {key: values.pop(key) for key in group}
            command(**values, **{name: build(**grouped)})

        keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in merged]  # typer passes keywords
        parsed.__signature__ = own.replace(parameters=keyword)  # type: ignore[attr-defined]
        parsed.__annotations__ = {p.name: p.annotation for p in merged}
        return parsed  # type: ignore[return-value]

    return decorate


def model_options(
    model: ModelArg, input_shape: ShapeOpt = None, classes: ClassesOpt = None, width: WidthOpt = 1.0
) -> dict[str, Any]:
    """MODEL and the options that shape it, as the API's stages take them (`ep.profile(**named, ...)`)."""
    return {"model": model, "input_shape": input_shape, "classes": classes, "width": width}


def tuning_options(trials: TrialsOpt = None, minutes: MinutesOpt = None) -> dict[str, Any]:
    """How long a stage may tune, as ep.profile and ep.compile take it (`ep.compile(..., **tuning)`)."""
    return {"trials": trials, "tuning_minutes": minutes}


with_model = options("named", model_options)  # a command's parameter `named`: MODEL, --input-shape, ...
with_tuning = options("tuning", tuning_options)  # a command's parameter `tuning`: --trials, --tuning-minutes


def check_output(path: Path) -> None:
    """Refuse an output file that cannot be written before the work that produces it, not after."""
    if path.is_dir():
        raise EdgepruneError(f"-o {path} is a folder", hint=f"name a file, e.g. -o {path / 'model.pt'}")
    folder = next((p for p in path.absolute().parents if p.exists()), Path("/"))
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise EdgepruneError(f"cannot write {path}: {folder} is not a writable folder")


def fail(error: EdgepruneError) -> NoReturn:
    # soft_wrap: a message is one line however narrow the terminal, so scripts can grep it
    console.print(f"[bold red]error:[/] {escape(error.message)}", highlight=False, soft_wrap=True)
    if error.hint:
        console.print(f"[yellow]hint:[/] {escape(error.hint)}", highlight=False, soft_wrap=True)
    raise SystemExit(EXIT_ERROR)


def set_threads(threads: int) -> None:
    """Torch's CPU threads for this process: set by the CLI only (library code leaves process state alone)."""
    import torch

    if threads < 1:
        raise EdgepruneError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


@contextlib.contextmanager
def tvm_output(log_file: Path | None, verbose: bool) -> Iterator[None]:
    """TVM's output during a command: appended to `log_file` (None where the library keeps its own log, as
    `run` does in its folder) and, with --verbose, printed on the console above the progress bars."""
    from rich.logging import RichHandler

    from edgeprune import logs

    with contextlib.ExitStack() as stack:
        if log_file is not None:
            stack.enter_context(logs.tvm_log(log_file))
        if verbose:
            plain = {"show_time": False, "show_level": False, "show_path": False, "markup": False}
            stack.enter_context(logs.tvm_to(RichHandler(console=console, **plain)))
        yield


def log_lines(log: Path) -> list[str]:
    """Where TVM's output of the command went, for its closing lines; none when it wrote none."""
    return [f"  TVM's output (tuning tables, trials): {log}"] if log.exists() else []


def refuse_if_busy(device: Any) -> None:
    """--no-wait: fail before any work when another process writes the device's latency table (without it,
    the profile stage waits its turn and says for whom)."""
    from edgeprune.profiling import lut

    if (holder := lut.writer(device)) is not None:
        raise lut.busy_error(device, holder)
