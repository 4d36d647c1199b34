"""Device profiles: one TOML file per board in `device_profiles/`, plus the built-in `local` device.

A profile is the one place a board's facts live (TVM target, tracker, SSH); every stage reads it from here.
Loading validates every field and names the file and the field on error, because a typo in a profile
otherwise surfaces minutes later as an obscure TVM or SSH failure.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.errors import EdgepruneError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LOCAL = "local"
LOCAL_DEFAULT_PORT = 9190
SUPPORTED_TARGET_KINDS = ("llvm",)
_TARGET_KEYS = {"kind": str, "mtriple": str, "mcpu": str, "mattr": list, "num-cores": int}
_SECRET_WORDS = ("password", "passphrase", "secret", "token")


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
class DeviceProfile:
    name: str
    description: str
    target: dict[str, Any]
    tracker_host: str
    tracker_port: int
    key: str
    cross_compiler: str | None = None
    ssh: SSHConfig | None = None
    remote_workdir: str = "~/edgeprune"
    remote_python: str = "python3"
    source: Path | None = field(default=None, compare=False)

    @property
    def tracker(self) -> str:
        return f"{self.tracker_host}:{self.tracker_port}"

    @property
    def is_local(self) -> bool:
        return self.name == LOCAL

    @property
    def is_cross(self) -> bool:
        """True when code for this device cannot run on this host (needs a cross compiler to link)."""
        return "aarch64" in self.target.get("mtriple", "") or "arm" in self.target.get("mtriple", "")

    @property
    def vector_lanes(self) -> int:
        """fp32 lanes of the widest SIMD unit: the natural channel granularity of tuned kernels."""
        if self.is_cross:
            return 4  # NEON: 128-bit
        flags = _host_cpu_flags() if self.is_local else set(self.target.get("mattr", []))
        if {"avx512f", "+avx512f"} & flags:
            return 16
        if {"avx2", "+avx2", "avx", "+avx"} & flags:
            return 8
        return 4

    @property
    def lut_dir(self) -> Path:
        """Where this device's latency table and tuning database live: `device_profiles/<name>/`."""
        return profiles_dir() / self.name

    def to_json(self) -> dict[str, Any]:
        ssh = None if self.ssh is None else {"host": self.ssh.host, "port": self.ssh.port, "user": self.ssh.user}
        return {"name": self.name, "target": self.target, "tracker": self.tracker, "key": self.key, "ssh": ssh}


def profiles_dir() -> Path:
    """`$EDGEPRUNE_PROFILES_DIR`, else `./device_profiles` when it exists, else the checkout's own folder."""
    env = os.environ.get("EDGEPRUNE_PROFILES_DIR")
    if env:
        return Path(env)
    cwd = Path.cwd() / "device_profiles"
    if cwd.is_dir():
        return cwd
    return Path(__file__).resolve().parents[2] / "device_profiles"


def _host_cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def host_target() -> dict[str, Any]:
    """TVM target of this machine's CPU; LLVM's own name for it, so tuned code uses every extension."""
    from tvm.target import codegen  # deferred: importing TVM costs seconds

    target: dict[str, Any] = {"kind": "llvm", "mcpu": str(codegen.llvm_get_system_cpu())}
    target["num-cores"] = available_cores()
    return target


def local_device() -> DeviceProfile:
    """The built-in device: this CPU behind a real tracker and RPC server on 127.0.0.1 (the local farm)."""
    port = int(os.environ.get("EDGEPRUNE_LOCAL_PORT", LOCAL_DEFAULT_PORT))
    return DeviceProfile(
        name=LOCAL,
        description="This machine's CPU, through a local TVM RPC farm on 127.0.0.1",
        target=host_target(),
        tracker_host="127.0.0.1",
        tracker_port=port,
        key=os.environ.get("EDGEPRUNE_LOCAL_KEY", LOCAL),
    )


class _Reader:
    """Typed field access that names the file and the dotted field in every error."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def fail(self, fieldname: str, problem: str) -> EdgepruneError:
        return EdgepruneError(f"{self.path}: field '{fieldname}': {problem}")

    def get(self, dotted: str, kind: type | tuple[type, ...], required: bool = True, default: Any = None) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                if required:
                    raise self.fail(dotted, "missing")
                return default
            node = node[part]
        if kind is int and isinstance(node, bool) or not isinstance(node, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(dotted, f"expected {names}, got {type(node).__name__} {node!r}")
        return node


def _check_no_secrets(reader: _Reader, node: Any, prefix: str = "") -> None:
    if isinstance(node, list):
        for index, item in enumerate(node):
            _check_no_secrets(reader, item, f"{prefix}[{index}].")
    if isinstance(node, dict):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if any(word in key.lower() for word in _SECRET_WORDS):
                raise reader.fail(dotted, "secrets do not belong in device profiles; use an SSH key or agent")
            _check_no_secrets(reader, value, dotted + ".")


# Every key a profile may hold (the target table is checked against _TARGET_KEYS): a misspelt key
# (`keyfile`, `workdr`) would otherwise be ignored and its default used without a word.
_KNOWN_KEYS: dict[str, set[str] | None] = {
    "name": None,
    "description": None,
    "target": None,
    "tracker": {"host", "port", "key"},
    "build": {"cross_compiler"},
    "ssh": {"host", "port", "user", "key_file", "known_hosts"},
    "remote": {"workdir", "python"},
}


def _check_known_keys(reader: _Reader) -> None:
    for key, value in reader.data.items():
        if key not in _KNOWN_KEYS:
            raise reader.fail(key, f"unknown key (known: {', '.join(_KNOWN_KEYS)})")
        allowed = _KNOWN_KEYS[key]
        if allowed is None:
            continue
        if not isinstance(value, dict):
            raise reader.fail(key, f"expected a table, got {type(value).__name__}")
        for inner in value:
            if inner not in allowed:
                raise reader.fail(f"{key}.{inner}", f"unknown key (known: {', '.join(sorted(allowed))})")


def _parse_target(r: _Reader) -> dict[str, Any]:
    target = r.get("target", dict)
    for key, value in target.items():
        if key not in _TARGET_KEYS:
            raise r.fail(f"target.{key}", f"unknown target key (known: {', '.join(_TARGET_KEYS)})")
        expected = _TARGET_KEYS[key]
        if not isinstance(value, expected) or isinstance(value, bool):
            raise r.fail(f"target.{key}", f"expected {expected.__name__}, got {type(value).__name__}")
    kind = r.get("target.kind", str)
    if kind not in SUPPORTED_TARGET_KINDS:
        raise r.fail("target.kind", f"unsupported target kind '{kind}' (supported: {SUPPORTED_TARGET_KINDS})")
    if "mattr" in target and not all(isinstance(a, str) for a in target["mattr"]):
        raise r.fail("target.mattr", "expected a list of strings like ['+neon']")
    if target.get("num-cores", 1) < 1:
        raise r.fail("target.num-cores", "must be >= 1")
    return dict(target)


def _parse_ssh(r: _Reader) -> SSHConfig | None:
    if "ssh" not in r.data:
        return None
    r.get("ssh", dict)
    port = r.get("ssh.port", int, required=False, default=22)
    if not 0 < port < 65536:
        raise r.fail("ssh.port", f"port {port} out of range")
    key_file = r.get("ssh.key_file", str, required=False)
    return SSHConfig(
        host=r.get("ssh.host", str),
        user=r.get("ssh.user", str),
        port=port,
        key_file=_beside(r.path, key_file) if key_file else None,
        known_hosts=_beside(r.path, r.get("ssh.known_hosts", str, required=False, default="~/.ssh/known_hosts")),
    )


def _beside(profile: Path, path: str) -> str:
    """A relative path in a profile means a file next to the profile, wherever edgeprune is run from."""
    expanded = Path(path).expanduser()
    return str(expanded if expanded.is_absolute() else profile.absolute().parent / expanded)


def load_profile(path: str | os.PathLike[str]) -> DeviceProfile:
    """Parse and validate one profile file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EdgepruneError(f"{path}: cannot read device profile: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise EdgepruneError(f"{path}: not a UTF-8 text file: {exc.reason} at byte {exc.start}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise EdgepruneError(f"{path}: not valid TOML: {exc}") from exc
    r = _Reader(path, data)
    _check_no_secrets(r, data)
    _check_known_keys(r)
    name = r.get("name", str)
    if name == LOCAL:
        raise r.fail("name", "'local' is the built-in device; choose another name")
    if name != path.stem:
        raise r.fail("name", f"'{name}' must match the file name '{path.stem}'")
    port = r.get("tracker.port", int)
    if not 0 < port < 65536:
        raise r.fail("tracker.port", f"port {port} out of range")
    return DeviceProfile(
        name=name,
        description=r.get("description", str, required=False, default=""),
        target=_parse_target(r),
        tracker_host=r.get("tracker.host", str),
        tracker_port=port,
        key=r.get("tracker.key", str),
        cross_compiler=r.get("build.cross_compiler", str, required=False),
        ssh=_parse_ssh(r),
        remote_workdir=r.get("remote.workdir", str, required=False, default="~/edgeprune"),
        remote_python=r.get("remote.python", str, required=False, default="python3"),
        source=path,
    )


def profile_paths(directory: Path | None = None) -> list[Path]:
    directory = directory or profiles_dir()
    return sorted(directory.glob("*.toml")) if directory.is_dir() else []


def list_devices(directory: Path | None = None) -> list[DeviceProfile]:
    """The built-in `local` device first, then every profile file, each validated."""
    return [local_device(), *(load_profile(p) for p in profile_paths(directory))]


def load_device(name_or_path: str) -> DeviceProfile:
    """Resolve `--device`: `local`, a profile name in `device_profiles/`, or a path to a .toml file."""
    if name_or_path == LOCAL:
        return local_device()
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and candidate.exists():
        return load_profile(candidate)
    path = profiles_dir() / f"{name_or_path}.toml"
    if path.exists():
        return load_profile(path)
    known = [LOCAL, *(p.stem for p in profile_paths())]
    raise EdgepruneError(
        f"unknown device '{name_or_path}'",
        hint=f"known devices: {', '.join(known)} (profiles are read from {profiles_dir()})",
    )
