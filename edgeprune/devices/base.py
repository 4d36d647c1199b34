"""The Device interface: everything a stage must know about a board, behind one class per kind of board.

Profiler, compiler, verifier and tuner ask the device (its TVM target, how a build is linked, how a session is
obtained, which runtime device to use inside it, how finely channels are worth profiling, how its servers are
started, how it is timed) and never test names or flags. A kind is one class registered by name with
`register`; a profile's `kind` field picks it (`create(kind, **fields)`), as TVM's meta_schedule picks its
strategies and nn-Meter its backends.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from edgeprune.devices import elf
from edgeprune.devices.tuning import TuningConfig
from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:
    from tvm.rpc import RPCSession
    from tvm.target import Target

DEFAULT_SESSION_TIMEOUT_S = 10.0
CROSS_COMPILER_HINT = "on Debian/Ubuntu: apt-get install g++-aarch64-linux-gnu"


@dataclass(frozen=True)
class TimingSettings:
    """How a compiled network is timed on a device: `repeat` samples, each the mean of `number` runs (raised
    by TVM until a sample lasts `min_repeat_ms`), after `warmup` untimed runs. One set of defaults for every
    stage; a profile's `[timing]` table overrides them for its board (a slow board wants fewer repeats)."""

    number: int = 10
    repeat: int = 10
    min_repeat_ms: int = 50
    warmup: int = 1
    cache_flush: bool = False  # flush the CPU caches before each sample (cold-cache timings)

    def __post_init__(self) -> None:
        for name in ("number", "repeat"):
            if getattr(self, name) < 1:
                raise EdgepruneError(f"timing.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("min_repeat_ms", "warmup"):
            if getattr(self, name) < 0:
                raise EdgepruneError(f"timing.{name} must not be negative, got {getattr(self, name)}")

    def with_counts(self, number: int | None = None, repeat: int | None = None) -> TimingSettings:
        """These settings with a command's `--number`/`--repeat` where given."""
        changes = {k: v for k, v in (("number", number), ("repeat", repeat)) if v is not None}
        return TimingSettings(**{**asdict(self), **changes})


@dataclass(frozen=True)
class SSHConfig:
    """How `deploy` and `board` reach the board. Keys only: no password is ever read from a profile."""

    host: str
    user: str
    port: int = 22
    key_file: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"

    @property
    def key_path(self) -> Path | None:
        return Path(self.key_file).expanduser() if self.key_file else None

    @property
    def known_hosts_path(self) -> Path:
        return Path(self.known_hosts).expanduser()


@dataclass(frozen=True)
class Device(ABC):
    """A board edgeprune profiles, compiles for, measures and deploys to. Subclasses are the kinds."""

    kind: ClassVar[str]
    target_kinds: ClassVar[tuple[str, ...]] = ("llvm",)  # TVM target kinds a profile of this kind may name
    target_keys: ClassVar[dict[str, type]] = {"kind": str, "mtriple": str, "mcpu": str, "mattr": list, "num-cores": int}
    # measured times are this board's own (False for an emulated board: labelled, never reported)
    timings_are_real: ClassVar[bool] = True
    # a library built for this device runs in this process (then it is checked here too)
    runs_on_host: ClassVar[bool] = False
    # the device's servers run on this machine's cores, so a build here would disturb a measurement there (the
    # profiler then never overlaps them)
    shares_host_cores: ClassVar[bool] = False

    name: str
    description: str
    target: dict[str, Any]
    tracker_host: str
    tracker_port: int
    key: str
    profiles_root: Path  # where this device's LUT and tuning database live: `<root>/<name>/`
    cross_compiler: str | None = None
    ssh: SSHConfig | None = None
    remote_workdir: str = "~/edgeprune"
    remote_python: str = "python3"
    timing: TimingSettings = field(default_factory=TimingSettings)
    tuning: TuningConfig = field(default_factory=TuningConfig)  # the profile's [tuning] table
    source: Path | None = field(default=None, compare=False)
    # the blocks `with device:` entered, innermost last (a frozen dataclass may hold a list and change its items)
    _served: list[contextlib.ExitStack] = field(default_factory=list, init=False, repr=False, compare=False)

    # -- identity ---------------------------------------------------------------------------------------------
    @property
    def tracker(self) -> str:
        return f"{self.tracker_host}:{self.tracker_port}"

    @property
    def lut_dir(self) -> Path:
        """Where this device's latency table and tuning database live."""
        return self.profiles_root / self.name

    def to_json(self) -> dict[str, Any]:
        ssh = None if self.ssh is None else {"host": self.ssh.host, "port": self.ssh.port, "user": self.ssh.user}
        return {
            "name": self.name,
            "kind": self.kind,
            "target": self.target,
            "tracker": self.tracker,
            "key": self.key,
            "ssh": ssh,
            "timings_are_real": self.timings_are_real,
        }

    # -- code generation ----------------------------------------------------------------------------------
    @classmethod
    def target_problems(cls, target: dict[str, Any]) -> dict[str, str]:
        """What is wrong with a profile's `[target]` table beyond its keys' types, by dotted field under
        `target` (the profile parser names the file and the field): nothing for most kinds."""
        return {}

    def tvm_target(self) -> Target:
        import tvm

        return tvm.target.Target(dict(self.target))

    @property
    @abstractmethod
    def channel_step(self) -> int:
        """The channel granularity of tuned kernels (SIMD lanes, a warp): the latency table's grid step."""

    @property
    def architecture(self) -> str:
        """The CPU architecture the device's libraries are built for (`x86_64`, `aarch64`)."""
        return str(self.target.get("mtriple", "")).split("-", 1)[0] or platform.machine()

    def library_mismatch(self, library: Path) -> str | None:
        """Why the compiled `library` cannot run on this device (its ELF header names another CPU), or None:
        the check `verify` and `deploy` make before loading anything, so a wrong artifact fails with its cause."""
        found, expected = elf.read_machine(library), elf.machine_of(self.architecture)
        if found is None or expected is None or found == expected:
            return None
        return f"{library} is {elf.machine_name(found)} code; device '{self.name}' runs {elf.machine_name(expected)}"

    @property
    def needs_cross_link(self) -> bool:
        """True when this host's linker cannot link the device's libraries."""
        return self.architecture != platform.machine()

    def library_name(self, stem: str = "model") -> str:
        """`.so` when this host can link for the device, else `.tar` (the board's RPC server links it)."""
        return f"{stem}.tar" if self.needs_cross_link and not self.cross_compiler else f"{stem}.so"

    def check_toolchain(self) -> None:
        """Fail before any tuning when the device's cross compiler is missing."""
        if self.needs_cross_link and self.cross_compiler and shutil.which(self.cross_compiler) is None:
            raise EdgepruneError(
                f"cross compiler '{self.cross_compiler}' for device '{self.name}' is not installed",
                hint=f"{CROSS_COMPILER_HINT} (or remove build.cross_compiler from the profile to ship a .tar "
                "the board links itself)",
            )

    def linker(self) -> Callable[..., Any] | None:
        """The `fcompile` TVM's `export_library` should use: None for this host's compiler."""
        import tvm.support

        if self.needs_cross_link and not self.cross_compiler:
            return tvm.support.tar.tar
        if self.needs_cross_link:
            self.check_toolchain()
            return tvm.support.cc.cross_compiler(self.cross_compiler)
        return None

    def pack_imports(self) -> Callable[..., str] | None:
        """The `fpack_imports` TVM's `export_library` should use to embed the library's imported modules
        (device code): None for TVM's own packing, which embeds them as they are."""
        return None

    def export(self, lib: Any, folder: Path, stem: str = "model") -> Path:
        """Write a built TVM module as this device's library into `folder`; returns its path."""
        from edgeprune.devices.native_log import NOISE, without_native_lines

        path = Path(folder) / self.library_name(stem)
        options = {"fcompile": self.linker(), "fpack_imports": self.pack_imports()}
        with without_native_lines(NOISE):
            lib.export_library(str(path), **{k: v for k, v in options.items() if v is not None})
        return path

    def prepare_tuning(self) -> None:  # noqa: B027 - most kinds need nothing
        """Load what MetaSchedule's schedule rules need for this device's target (called once before tuning)."""

    # -- sessions -----------------------------------------------------------------------------------------
    def request_session(self, timeout: float = DEFAULT_SESSION_TIMEOUT_S, session_timeout: float = 0) -> RPCSession:
        """A session on one of the device's servers, or a clear error within `timeout` seconds."""
        from edgeprune.devices import rpc

        return rpc.request_session(self, timeout=timeout, session_timeout=session_timeout)

    @abstractmethod
    def runtime_device(self, session: RPCSession) -> Any:
        """The TVM runtime device inside a session on this board (`cpu(0)`, `cuda(0)`)."""

    @property
    def runtime_kind(self) -> str:
        """The runtime device's kind by name (`cpu`, `cuda`): what the board runner passes to TVM on the board."""
        return "cpu"

    @contextlib.contextmanager
    def serving(self, servers: int = 1) -> Iterator[Device]:
        """The device's RPC servers for the duration of a block: started when edgeprune owns them (the local
        farm), assumed running otherwise (a board's are started by `edgeprune board bootstrap`)."""
        yield self

    def __enter__(self) -> Device:
        """`with device:` keeps its RPC servers up across the calls in the block (`serving()` for a Python
        user: the local farm starts once rather than for every stage, and stops at the end)."""
        stack = contextlib.ExitStack()
        stack.enter_context(self.serving())
        self._served.append(stack)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._served.pop().close()

    def start_hint(self) -> str:
        """What a user runs to start this device's RPC servers."""
        return f"`edgeprune board bootstrap --device {self.name}`"

    # -- health -------------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The board's clocks, governors, temperatures and throttle state now (`devices.health`), read over SSH
        where the profile has `[ssh]`. Never raises: a board that cannot be read is recorded as unknown, and the
        measurement it was to accompany goes on."""
        from edgeprune.devices import health
        from edgeprune.devices.remote.ssh import connection

        if self.ssh is None:
            return {"read_from": None, "unknown": "the profile has no [ssh] to read the board's health with"}
        try:
            with connection(self) as conn:

                def stdout(command: str) -> str | None:
                    done = conn.run(command, timeout=10)
                    return done.stdout if done.exit_code == 0 else None

                source = health.Captured.over(stdout, str(health.sysfs_root()))
                return health.read_health(source, f"ssh {self.ssh.user}@{self.ssh.host}:{self.ssh.port}")
        except EdgepruneError as error:
            return {"read_from": None, "unknown": f"could not read it over SSH: {error.message}"}


D = TypeVar("D", bound=type[Device])
_KINDS: dict[str, type[Device]] = {}


def register(kind: str) -> Callable[[D], D]:
    """Class decorator: make a Device subclass available as `kind = "<kind>"` in device profiles."""

    def add(cls: D) -> D:
        if kind in _KINDS and _KINDS[kind] is not cls:
            raise EdgepruneError(f"device kind '{kind}' is registered twice ({_KINDS[kind].__name__}, {cls.__name__})")
        cls.kind = kind
        _KINDS[kind] = cls
        return cls

    return add


def kinds() -> list[str]:
    """The registered device kinds, by name."""
    return sorted(_KINDS)


def kind_class(kind: str) -> type[Device]:
    """The class registered as `kind`."""
    if kind not in _KINDS:
        raise EdgepruneError(f"unknown device kind '{kind}'", hint=f"known kinds: {', '.join(kinds())}")
    return _KINDS[kind]


def create(kind: str, **fields: Any) -> Device:
    """A device of the registered `kind` with the given profile fields."""
    return kind_class(kind)(**fields)
