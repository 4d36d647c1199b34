"""Board health on record: the CPU clocks and governors, temperatures, a Pi's throttle flags, a Jetson's power mode.

A latency table profiled while a Pi throttled at 80-85 °C, or while the governor was `ondemand`, is wrong for the
rest of its life, and nothing in the numbers says so. So every timing session (profile, verify) reads what the
board can tell before and after, keeps it beside the numbers, and warns when the governor scales the clock with
load, a throttle flag is set, the board runs hot, or a core's clock moved during the measurement.

Readers go through a `Source`: `FileTree` reads a folder as if it were `/` (this machine's `/`, or a fake tree in a
test) and `Captured` holds what one shell command on a board (over SSH) returned for all of them. A file or command
that is absent is "unknown" (None), never an error: boards expose different subsets.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

ROOT_ENV = "EDGEPRUNE_SYSFS_ROOT"  # read health below this folder instead of `/` (a test's fake tree)
CPU = "/sys/devices/system/cpu"
THERMAL = "/sys/class/thermal"
DEVFREQ = "/sys/class/devfreq"  # a Jetson's GPU (and other accelerators') clocks
PI_THROTTLED = "/sys/devices/platform/soc/soc:firmware/get_throttled"  # Raspberry Pi OS kernels; else vcgencmd
# bits of `vcgencmd get_throttled` (Raspberry Pi documentation)
THROTTLE_BITS = {
    0: "under-voltage now",
    1: "ARM frequency capped now",
    2: "throttled now",
    3: "soft temperature limit now",
    16: "under-voltage has occurred",
    17: "ARM frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}
SCALING_GOVERNORS = frozenset({"ondemand", "powersave", "conservative", "schedutil"})  # the clock follows load
HOT_C = 80.0  # a Pi starts throttling at 80-85 °C
CLOCK_MOVED = 0.05  # a core's clock that changed by more than this during a measurement is reported


class Source(Protocol):
    """Where health is read: files by absolute path, folders' entries, and commands (stdout, or None)."""

    def read(self, path: str) -> str | None: ...

    def listdir(self, path: str) -> list[str]: ...

    def run(self, argv: list[str]) -> str | None: ...


def sysfs_root() -> Path:
    """`/`, or `$EDGEPRUNE_SYSFS_ROOT` (a folder laid out like it, for a test or a board's sysfs mounted here)."""
    return Path(os.environ.get(ROOT_ENV) or "/")


def _local_command(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


@dataclass(frozen=True)
class FileTree:
    """A folder read as if it were `/`; commands run on this machine (a test gives its own `command`)."""

    root: Path
    command: Callable[[list[str]], str | None] = _local_command

    def _path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def read(self, path: str) -> str | None:
        try:
            return self._path(path).read_text().strip()
        except OSError:
            return None

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self._path(path)))
        except OSError:
            return []

    def run(self, argv: list[str]) -> str | None:
        return self.command(argv)


VCGENCMD = ["vcgencmd", "get_throttled"]  # a Pi's throttle word where the firmware's sysfs file is missing
NVPMODEL = ["nvpmodel", "-q"]  # a Jetson's power mode
_MARK = "@@edgeprune-health@@ "  # starts each captured file's (or command's) block in the board's answer


@dataclass(frozen=True)
class Captured:
    """A board's health files and commands as one shell command returned them: every read after that is a
    lookup. Over SSH each separate read is a round trip (a reading is ~14 of them, ~0.3 s each on loopback),
    and `profile` reads the board's health around every few entries."""

    files: dict[str, str]  # absolute path (below the root) -> content; a folder's path ends with "/"
    outputs: dict[str, str]  # shlex.join(argv) -> stdout of a command that succeeded

    @classmethod
    def over(cls, execute: Callable[[str], str | None], root: str = "/") -> Captured:
        """Everything the readers (`READERS`) read, in one command run by `execute` (stdout, or None when it
        failed); `root` is the folder read as `/` (a test's fake tree)."""
        globs = " ".join(glob.lstrip("/") for reader in READERS for glob in reader.globs)
        commands = "".join(
            f"out=$({shlex.join(argv)} 2>/dev/null) && "
            f'printf "%s\\n%s\\n" {shlex.quote(_MARK + "!" + shlex.join(argv))} "$out"; '
            for reader in READERS
            for argv in reader.commands
        )
        script = (
            f"cd {shlex.quote(root)} 2>/dev/null || exit 0; "
            f'for f in {globs}; do if [ -d "$f" ]; then printf "%s\\n" "{_MARK}/$f"; '
            f'elif [ -r "$f" ]; then printf "%s\\n" "{_MARK}/$f"; cat "$f" 2>/dev/null; fi; done; {commands}true'
        )
        return cls.parse(execute(script) or "")

    @classmethod
    def parse(cls, answer: str) -> Captured:
        files: dict[str, str] = {}
        outputs: dict[str, str] = {}
        key: str | None = None
        lines: list[str] = []
        for line in [*answer.splitlines(), _MARK]:
            if not line.startswith(_MARK):
                lines.append(line)
                continue
            if key is not None:
                text = "\n".join(lines)
                if key.startswith("!"):
                    outputs[key[1:]] = text
                else:
                    files[key] = text.strip()
            key, lines = line[len(_MARK) :], []
        return cls(files, outputs)

    def read(self, path: str) -> str | None:
        return self.files.get(path) if not path.endswith("/") else None

    def listdir(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted({key[len(prefix) :].split("/")[0] for key in self.files if key.startswith(prefix)} - {""})

    def run(self, argv: list[str]) -> str | None:
        return self.outputs.get(shlex.join(argv))


def _number(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def _cpus(source: Source) -> list[int]:
    """The CPU numbers in `cpu/online` ("0-3,5"), else the `cpuN` folders."""
    text = source.read(f"{CPU}/online")
    if text:
        cpus: list[int] = []
        for part in text.split(","):
            first, _, last = part.partition("-")
            cpus += range(int(first), int(last or first) + 1)
        return cpus
    return sorted(int(n[3:]) for n in source.listdir(CPU) if n.startswith("cpu") and n[3:].isdigit())


def _mhz(khz: str | None) -> float | None:
    value = _number(khz)
    return None if value is None else value / 1000


def read_cores(source: Source) -> list[dict[str, Any]]:
    """Per core: its governor and current and maximum clock (MHz); None where the kernel has no cpufreq."""
    cores = []
    for cpu in _cpus(source):
        freq = f"{CPU}/cpu{cpu}/cpufreq"
        cores.append(
            {
                "cpu": cpu,
                "governor": source.read(f"{freq}/scaling_governor"),
                "mhz": _mhz(source.read(f"{freq}/scaling_cur_freq")),
                "max_mhz": _mhz(source.read(f"{freq}/scaling_max_freq")),
            }
        )
    return cores


def read_temperatures(source: Source) -> dict[str, float]:
    """Each thermal zone's temperature in °C, by `zoneN (type)`."""
    found = {}
    for zone in source.listdir(THERMAL):
        if not zone.startswith("thermal_zone"):
            continue
        milli = _number(source.read(f"{THERMAL}/{zone}/temp"))
        if milli is not None:
            found[f"{zone} ({source.read(f'{THERMAL}/{zone}/type') or '?'})"] = milli / 1000
    return found


def read_throttled(source: Source) -> dict[str, Any] | None:
    """A Raspberry Pi's throttle word and the flags it sets: from the firmware's sysfs file, else `vcgencmd
    get_throttled`; None on a board that has neither."""
    raw = source.read(PI_THROTTLED)
    if raw is None and (out := source.run(VCGENCMD)):
        raw = out.strip().partition("=")[2] or None
    if raw is None:
        return None
    try:
        word = int(raw, 16)
    except ValueError:
        return None
    return {"raw": hex(word), "flags": [name for bit, name in THROTTLE_BITS.items() if word >> bit & 1]}


def read_power_mode(source: Source) -> str | None:
    """A Jetson's power mode (`nvpmodel -q`: "NV Power Mode: MAXN"); None elsewhere."""
    out = source.run(NVPMODEL)
    if not out:
        return None
    line = next((x for x in out.splitlines() if "Power Mode" in x), out.splitlines()[0])
    return line.partition(":")[2].strip() or line.strip()


def read_accelerator_clocks(source: Source) -> dict[str, float]:
    """devfreq devices' current clocks in MHz (a Jetson's GPU), by device name."""
    clocks = {}
    for name in source.listdir(DEVFREQ):
        hz = _number(source.read(f"{DEVFREQ}/{name}/cur_freq"))
        if hz is not None:
            clocks[name] = hz / 1e6
    return clocks


@dataclass(frozen=True)
class Reader:
    """One fact of a board's health: how to read it from a `Source`, and the files (shell globs below the root)
    and commands it reads, so that `Captured.over` can fetch what every reader needs in one command."""

    key: str
    read: Callable[[Source], Any]
    globs: tuple[str, ...] = ()
    commands: tuple[list[str], ...] = ()


READERS = (
    Reader(
        "cores",
        read_cores,
        (
            f"{CPU}/online",
            f"{CPU}/cpu[0-9]*/",
            *(
                f"{CPU}/cpu[0-9]*/cpufreq/{name}"
                for name in ("scaling_governor", "scaling_cur_freq", "scaling_max_freq")
            ),
        ),
    ),
    Reader(
        "temperatures_c",
        read_temperatures,
        (f"{THERMAL}/thermal_zone*/", f"{THERMAL}/thermal_zone*/temp", f"{THERMAL}/thermal_zone*/type"),
    ),
    Reader("throttled", read_throttled, (PI_THROTTLED,), (VCGENCMD,)),
    Reader("power_mode", read_power_mode, commands=(NVPMODEL,)),
    Reader("accelerator_mhz", read_accelerator_clocks, (f"{DEVFREQ}/*/", f"{DEVFREQ}/*/cur_freq")),
)


def read_health(source: Source, where: str) -> dict[str, Any]:
    """Everything the board tells about its clocks and heat now; `where` says how it was read."""
    return {
        "read_from": where,
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **{reader.key: reader.read(source) for reader in READERS},
    }


def this_machine() -> dict[str, Any]:
    """This machine's health (below `sysfs_root()`)."""
    root = sysfs_root()
    return read_health(FileTree(root), "this machine" + ("" if root == Path("/") else f" (files below {root})"))


def summary_line(state: dict[str, Any]) -> str:
    """One line for a terminal: governor(s), throttle flags, hottest zone, power mode; "unknown" where absent."""
    if "cores" not in state:
        return f"health: unknown ({state.get('unknown', 'not read')})"
    governors = sorted({str(c["governor"]) for c in state["cores"] if c["governor"]}) or ["unknown"]
    throttled = state["throttled"]
    flags = "unknown" if throttled is None else (", ".join(throttled["flags"]) or f"none ({throttled['raw']})")
    temps = state["temperatures_c"]
    hottest = f"{max(temps.values()):.0f} °C" if temps else "unknown"
    mode = f", power mode {state['power_mode']}" if state.get("power_mode") else ""
    return (
        f"health ({state['read_from']}): governor {'/'.join(governors)} on {len(state['cores'])} core(s), "
        f"throttle flags {flags}, hottest zone {hottest}{mode}"
    )


def _throttle_flags(reading: dict[str, Any] | None) -> dict[str, Any] | None:
    """A reading's throttle word when it has flags set, else None."""
    throttled = (reading or {}).get("throttled")
    return throttled if throttled and throttled["flags"] else None


def _hot(reading: dict[str, Any]) -> str | None:
    hot = {zone: c for zone, c in reading.get("temperatures_c", {}).items() if c >= HOT_C}
    return ("running hot: " + ", ".join(f"{zone} {c:.0f} °C" for zone, c in hot.items())) if hot else None


def _clock_moved(cores: list[tuple[dict[str, Any], dict[str, Any]]]) -> str | None:
    """The cores of (before, after) pairs whose clock moved by more than CLOCK_MOVED, in one line."""
    moved = [
        f"cpu{a['cpu']} {b['mhz']:.0f} -> {a['mhz']:.0f} MHz"
        for b, a in cores
        if b["mhz"] and a["mhz"] and abs(a["mhz"] - b["mhz"]) > CLOCK_MOVED * b["mhz"]
    ]
    return ("the clock moved during the measurement: " + ", ".join(moved)) if moved else None


def _read(reading: dict[str, Any] | None) -> bool:
    """Whether the board could be read (an unknown reading has no "cores")."""
    return reading is not None and "cores" in reading


def warnings(before: dict[str, Any] | None, after: dict[str, Any] | None = None) -> list[str]:
    """What makes a measurement taken between two readings doubtful: a governor that scales the clock with load,
    a throttle flag, a hot zone, a core's clock that moved by more than CLOCK_MOVED."""
    said: list[str] = []
    last = after or before
    if last is None or not _read(last):
        return said
    governors = sorted({c["governor"] for c in last["cores"] if c["governor"] in SCALING_GOVERNORS})
    if governors:
        said.append(
            f"CPU governor {', '.join(governors)} scales the clock with load: timings vary with what ran before "
            "(set 'performance' for stable numbers: cpupower frequency-set -g performance)"
        )
    flags = _throttle_flags(before) or _throttle_flags(after)
    if flags:
        said.append(f"throttle flags set ({flags['raw']}): {', '.join(flags['flags'])}")
    moved = None
    if before is not None and after is not None and _read(before):
        moved = _clock_moved(list(zip(before["cores"], after["cores"], strict=False)))
    return said + [x for x in (_hot(last), moved) if x]


def _throttling_now(reading: dict[str, Any]) -> list[str]:
    """The throttle flags that say the board is held back at this moment (bits 0-3, not the sticky "has
    occurred" ones, which stay set from boot until the next one)."""
    throttled = reading.get("throttled")
    return [] if not throttled else [f for f in throttled["flags"] if f.endswith(" now")]


def throttles(reading: dict[str, Any]) -> str | None:
    """What says the board is held back at this moment (its throttle flags of now), or None."""
    now = _throttling_now(reading) if _read(reading) else []
    return f"the board throttles: {', '.join(now)} ({reading['throttled']['raw']})" if now else None


def throttled_during(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The throttling a measurement taken between these two readings may have suffered: flags of now on either
    side, or sticky ("has occurred") flags newly set between them."""
    if not (_read(before) and _read(after)):
        return []  # a board that cannot be read is recorded as unknown, never a reason to stop
    now = throttles(after) or throttles(before)
    old = set((before.get("throttled") or {}).get("flags", []))
    new = [f for f in (after.get("throttled") or {}).get("flags", []) if f not in old and not f.endswith(" now")]
    said = [now] if now else []
    if new:
        said.append(f"throttle flags set during the measurement: {', '.join(new)} ({after['throttled']['raw']})")
    return said


def moved_during(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """A core's governor that changed between these two readings, or the clock of a core that a fixed governor
    holds moving by more than CLOCK_MOVED: the speed the numbers were taken at changed. Under a governor that
    scales the clock with load (SCALING_GOVERNORS) the clock moves by design: that is warned of (`warnings`),
    and measuring again would not make it hold still."""
    if not (_read(before) and _read(after)):
        return []
    pairs = list(zip(before["cores"], after["cores"], strict=False))
    changed = [f"cpu{a['cpu']} {b['governor']} -> {a['governor']}" for b, a in pairs if b["governor"] != a["governor"]]
    said = ["the governor changed during the measurement: " + ", ".join(changed)] if changed else []
    held = [(b, a) for b, a in pairs if b["governor"] == a["governor"] and a["governor"] not in SCALING_GOVERNORS]
    clock = _clock_moved(held)
    return said + ([clock] if clock else [])


def disturbances(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Why a measurement taken between these two readings must be taken again: `throttled_during` and
    `moved_during`. A governor that scales with load, or a zone above HOT_C, is only warned of (`warnings`): a
    hot x86 host often runs at full clock, and a Pi that heat holds back says so in its throttle flags."""
    return throttled_during(before, after) + moved_during(before, after)


def unsettled(reading: dict[str, Any]) -> list[str]:
    """Why a board should not be measured now: it throttles, or a zone runs hot (nothing when unknown)."""
    return [x for x in (throttles(reading), _hot(reading)) if x] if _read(reading) else []


def calm(reading: dict[str, Any]) -> bool:
    """Whether a board may be measured now (see `unsettled`)."""
    return not unsettled(reading)


@dataclass(frozen=True)
class CoolDown:
    """How long `profile` waits for a disturbed board to calm down (polling its health every `poll` seconds)
    before it measures the disturbed entries again."""

    seconds: float = 120.0  # a Pi's SoC cools from its 80-85 °C limit in about a minute when idle
    poll: float = 5.0


def cool_down(
    read: Callable[[], dict[str, Any]], wait: CoolDown, on_wait: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Poll `read()` until the board is `calm` or `wait.seconds` have passed; `on_wait(elapsed, total)` (whole
    seconds) after each poll. Returns the last reading: the caller judges whether it is calm."""
    started = time.monotonic()
    total = max(1, round(wait.seconds))
    while True:
        reading = read()
        elapsed = time.monotonic() - started
        if on_wait is not None:
            on_wait(min(total, round(elapsed)), total)
        if calm(reading) or elapsed >= wait.seconds:
            return reading
        time.sleep(min(wait.poll, max(0.0, wait.seconds - elapsed)))


def record(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Health before and after one timing session and what it warns of: what verify.json and a LUT keep."""
    return {"before": before, "after": after, "warnings": warnings(before, after)}
