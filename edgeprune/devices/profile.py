"""Device profiles: one TOML file per board, plus the built-in `local` device.

A profile is the one place a board's facts live (kind, TVM target, tracker, SSH, timing, tuning); loading it gives the
`Device` of its kind. Loading validates every field and names the file and the field on error, because a typo in
a profile otherwise surfaces minutes later as an obscure TVM or SSH failure.

Two folders: the user's profiles folder (`profiles_dir()`), which holds their profiles and every device's LUT and
tuning database (`<folder>/<device>/`), and the example boards shipped inside the package (`SHIPPED_DIR`,
read-only), usable by name until the user's folder holds a profile of the same name. Measurements always go to
the user's folder: an installed package's folder may be read-only, shared, or replaced on upgrade.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune.devices import cuda as _cuda
from edgeprune.devices import local as _local
from edgeprune.devices.base import Device, SSHConfig, TimingSettings, create, kind_class, kinds
from edgeprune.devices.builtin import LOCAL, LOCAL_DEFAULT_PORT, LOCAL_GPU, LOCAL_GPU_DEFAULT_PORT
from edgeprune.devices.tuning import TuningConfig
from edgeprune.errors import EdgepruneError
from edgeprune.paths import user_data_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_KIND = "board"  # profiles written before `kind` existed are RPC boards
BUILT_IN = (LOCAL, LOCAL_GPU)  # devices (and kinds) edgeprune defines itself, never a profile
_SECRET_WORDS = ("password", "passphrase", "secret", "token")
_TIMING_KEYS = {"number": int, "repeat": int, "min_repeat_ms": int, "warmup": int, "cache_flush": bool}
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "boards"  # example boards, package data


def profiles_dir() -> Path:
    """The user's profiles folder: `$EDGEPRUNE_PROFILES_DIR`, else `./device_profiles` when it exists (a project
    that keeps its boards beside its code), else the per-user data folder (`~/.local/share/edgeprune`)."""
    env = os.environ.get("EDGEPRUNE_PROFILES_DIR")
    if env:
        return Path(env)
    cwd = Path.cwd() / "device_profiles"
    if cwd.is_dir():
        return cwd
    return user_data_dir()


def _port_from_env(variable: str, default: int) -> int:
    """A built-in device's tracker port from `$variable` (else `default`); a value that is no port is refused
    by name, as `farm up` refuses it, rather than failing deep inside as an internal error."""
    text = os.environ.get(variable)
    if text is None:
        return default
    if not text.strip().isdigit() or not 0 < int(text) < 65536:
        raise EdgepruneError(
            f"${variable} is '{text}', not a port number (1-65535)",
            hint=f"unset it (port {default}), or set it to a free port",
        )
    return int(text)


def local_device() -> Device:
    """The built-in device: this CPU behind a real tracker and RPC server on 127.0.0.1 (the local farm);
    `$EDGEPRUNE_LOCAL_PORT` and `$EDGEPRUNE_LOCAL_KEY` move it (tests and benchmarks run farms of their own)."""
    port = _port_from_env("EDGEPRUNE_LOCAL_PORT", LOCAL_DEFAULT_PORT)
    return _local.local_device(profiles_dir(), port, os.environ.get("EDGEPRUNE_LOCAL_KEY", LOCAL))


def local_gpu_device() -> Device:
    """The built-in device for this machine's GPU (it must have one), behind a loopback farm of its own;
    `$EDGEPRUNE_LOCAL_GPU_PORT` and `$EDGEPRUNE_LOCAL_GPU_KEY` move it, as for `local`."""
    port = _port_from_env("EDGEPRUNE_LOCAL_GPU_PORT", LOCAL_GPU_DEFAULT_PORT)
    return _cuda.local_gpu_device(profiles_dir(), port, os.environ.get("EDGEPRUNE_LOCAL_GPU_KEY", LOCAL_GPU))


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
        wants_bool = kind is bool or (isinstance(kind, tuple) and bool in kind)
        if isinstance(node, bool) and not wants_bool or not isinstance(node, kind):  # TOML's true is no number
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
    "kind": None,
    "timing": set(_TIMING_KEYS),
    "tuning": set(TuningConfig.keys()),
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


def _parse_target(r: _Reader, kind: type[Device]) -> dict[str, Any]:
    """The `[target]` table, checked against what the device's kind accepts."""
    target = r.get("target", dict)
    for key, value in target.items():
        if key not in kind.target_keys:
            raise r.fail(f"target.{key}", f"unknown target key (known: {', '.join(kind.target_keys)})")
        expected = kind.target_keys[key]
        if not isinstance(value, expected) or isinstance(value, bool):
            raise r.fail(f"target.{key}", f"expected {expected.__name__}, got {type(value).__name__}")
    target_kind = r.get("target.kind", str)
    if target_kind not in kind.target_kinds:
        raise r.fail(
            "target.kind", f"unsupported target kind '{target_kind}' (supported: {', '.join(kind.target_kinds)})"
        )
    for field, problem in kind.target_problems(target).items():
        raise r.fail(f"target.{field}", problem)
    if "mattr" in target and not all(isinstance(a, str) for a in target["mattr"]):
        raise r.fail("target.mattr", "expected a list of strings like ['+neon']")
    if target.get("num-cores", 1) < 1:
        raise r.fail("target.num-cores", "must be >= 1")
    return dict(target)


def _parse_timing(r: _Reader) -> TimingSettings:
    if "timing" not in r.data:
        return TimingSettings()
    values = {key: r.get(f"timing.{key}", kind) for key, kind in _TIMING_KEYS.items() if key in r.data["timing"]}
    try:
        return TimingSettings(**values)
    except EdgepruneError as exc:
        raise r.fail("timing", exc.message) from None


def _parse_tuning(r: _Reader) -> TuningConfig:
    """The `[tuning]` table: the board's tuning budget and search settings (absent: the defaults)."""
    if "tuning" not in r.data:
        return TuningConfig()
    values = {}
    for key, types in TuningConfig.keys().items():
        if key in r.data["tuning"]:
            values[key] = r.get(f"tuning.{key}", types[0] if len(types) == 1 else types)
    try:
        return TuningConfig.from_table(values)
    except EdgepruneError as exc:
        raise r.fail("tuning", exc.message) from None


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


def load_profile(path: str | os.PathLike[str]) -> Device:
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
    if name in BUILT_IN:
        raise r.fail("name", f"'{name}' is a built-in device; choose another name")
    if name != path.stem:
        raise r.fail("name", f"'{name}' must match the file name '{path.stem}'")
    port = r.get("tracker.port", int)
    if not 0 < port < 65536:
        raise r.fail("tracker.port", f"port {port} out of range")
    kind = r.get("kind", str, required=False, default=DEFAULT_KIND)
    if kind in BUILT_IN or kind not in kinds():
        known = ", ".join(k for k in kinds() if k not in BUILT_IN)
        raise r.fail("kind", f"unknown device kind '{kind}' (known: {known})")
    return create(
        kind,
        name=name,
        description=r.get("description", str, required=False, default=""),
        target=_parse_target(r, kind_class(kind)),
        tracker_host=r.get("tracker.host", str),
        tracker_port=port,
        key=r.get("tracker.key", str),
        cross_compiler=r.get("build.cross_compiler", str, required=False),
        ssh=_parse_ssh(r),
        remote_workdir=r.get("remote.workdir", str, required=False, default="~/edgeprune"),
        remote_python=r.get("remote.python", str, required=False, default="python3"),
        timing=_parse_timing(r),
        tuning=_parse_tuning(r),
        profiles_root=profiles_dir(),
        source=path,
    )


def profile_paths(directory: Path | None = None) -> list[Path]:
    """Profile files by name: those in `directory` (default: the user's folder), then the shipped boards that
    no file there shadows; an explicit `directory` lists only itself."""
    folders = [directory] if directory is not None else [profiles_dir(), SHIPPED_DIR]
    found: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            found.setdefault(path.stem, path)
    return list(found.values())


@dataclass(frozen=True)
class BrokenProfile:
    """A profile file that does not load, kept with its error so that listing shows it beside the good ones."""

    path: Path
    error: str


def list_devices(directory: Path | None = None) -> tuple[list[Device], list[BrokenProfile]]:
    """The built-in `local` device first, then every profile that validates; the ones that do not, apart."""
    devices: list[Device] = [local_device()]
    broken: list[BrokenProfile] = []
    for path in profile_paths(directory):
        try:
            devices.append(load_profile(path))
        except EdgepruneError as exc:
            broken.append(BrokenProfile(path, str(exc)))
    return devices, broken


def load_device(name_or_path: str) -> Device:
    """Resolve `--device`: `local`, a profile name (the user's folder first, then the shipped boards), or a
    path to a .toml file."""
    if name_or_path == LOCAL:
        return local_device()
    if name_or_path == LOCAL_GPU:
        return local_gpu_device()
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and candidate.exists():
        return load_profile(candidate)
    for path in profile_paths():
        if path.stem == name_or_path:
            return load_profile(path)
    known = [*BUILT_IN, *(p.stem for p in profile_paths())]
    raise EdgepruneError(
        f"unknown device '{name_or_path}'",
        hint=f"known devices: {', '.join(known)} (profiles are read from {profiles_dir()} and {SHIPPED_DIR})",
    )
