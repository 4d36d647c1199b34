"""Runs ON THE BOARD: a standalone script (stdlib; numpy and the TVM runtime only for `smoke`).

`edgeprune deploy` and `edgeprune board` copy this file to the board and call it over SSH, so the board needs
no edgeprune install. Each command prints exactly one JSON object as the last line of stdout; a failure prints
{"error": ...} and exits 1. Keep it importing nothing from edgeprune and working on Python 3.8+.

  hash DIR                         sha256 of every regular file in DIR
  probe                            python, numpy and TVM versions, machine architecture, glibc version
  smoke DIR [--runtime cpu --number N --repeat R --min-repeat-ms M --warmup W]
                                   load DIR's library into the Relax VM on the runtime device, run one seeded
                                   input, time it (the workstation passes the device's timing settings), and
                                   compare the output for the artifact's reference input with PyTorch's
  start-server --state F --log L --tracker H:P --key K [--host A]   start a detached TVM rpc_server (runtime only,
                                   plus the runtime's extra library; listening on A, default every interface),
                                   record its PID in F
  stop-server --state F            stop exactly the recorded server (checks the PID is still that server)
  server-status --state F          the recorded server, whether it still runs, the tail of its log
"""

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time

RPC_MODULE = "tvm.exec.rpc_server"
# MetaSchedule's RPC runner fills every measurement's inputs with `tvm.contrib.random.random_fill_for_measure`,
# which lives here, not in libtvm_runtime.so: a runtime-only server without it passes a plain kernel run and
# then fails the first tuning step.
EXTRA_RUNTIME_LIB = "libtvm_runtime_extra.so"
# Looser than `verify` (1e-4): the board's CPU may sum in another order; a wrong model is off by far more.
REFERENCE_RTOL = 1e-3
REFERENCE_ATOL = 1e-3


class RunnerError(Exception):
    pass


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cmd_hash(args):
    folder = args.dir
    if not os.path.isdir(folder):
        raise RunnerError(f"no such folder: {folder}")
    names = sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n)))
    return {"files": {n: sha256_file(os.path.join(folder, n)) for n in names}}


def _import_runtime():
    """The TVM runtime only: `TVM_USE_RUNTIME_LIB=1` skips the compiler library (not needed to run a model)."""
    os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
    try:
        import numpy
        import tvm
        from tvm.runtime.vm import VirtualMachine
    except ImportError as exc:
        raise RunnerError(f"cannot import the TVM runtime on this board: {exc} (pip install apache-tvm)") from exc
    return numpy, tvm, VirtualMachine


def cmd_probe(args):
    libc, libc_version = platform.libc_ver()
    info = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "machine": platform.machine(),
        "glibc": libc_version if libc == "glibc" else None,  # which manylinux wheels the board runs
    }
    try:
        numpy, tvm, _ = _import_runtime()
        info.update(numpy=numpy.__version__, tvm=tvm.__version__)
    except RunnerError as exc:
        info.update(numpy=None, tvm=None, tvm_error=str(exc))
    return info


def _shape_of(value):
    if hasattr(value, "shape"):
        return [int(d) for d in value.shape]
    return [_shape_of(item) for item in value]  # a tuple output comes back as an array of tensors


def cmd_smoke(args):
    with open(os.path.join(args.dir, "manifest.json")) as fh:
        manifest = json.load(fh)
    numpy, tvm, VirtualMachine = _import_runtime()
    spec = manifest["input"]
    start = time.perf_counter()
    lib = tvm.runtime.load_module(os.path.join(args.dir, manifest["library"]))
    dev = tvm.device(args.runtime, 0)
    vm = VirtualMachine(lib, dev)
    loaded = time.perf_counter()
    data = numpy.random.default_rng(args.seed).standard_normal(spec["shape"]).astype(spec.get("dtype", "float32"))
    out = vm["main"](tvm.runtime.tensor(data, dev))
    for _ in range(args.warmup - 1):
        vm["main"](tvm.runtime.tensor(data, dev))
    shape = _shape_of(out)
    finite = bool(numpy.isfinite(out.numpy()).all()) if hasattr(out, "numpy") else None
    timer = vm.time_evaluator("main", dev, number=args.number, repeat=args.repeat, min_repeat_ms=args.min_repeat_ms)
    runs_ms = [t * 1e3 for t in timer(tvm.runtime.tensor(data, dev)).results]
    expected = manifest.get("output", {}).get("shape")
    return {
        **_against_reference(args.dir, vm, dev, numpy, tvm),
        "output_shape": shape,
        "expected_shape": expected,
        "shape_ok": expected is None or shape == expected,
        "finite": finite,
        "latency_ms": sorted(runs_ms)[len(runs_ms) // 2],
        "latency_runs_ms": runs_ms,
        "load_ms": (loaded - start) * 1e3,
        "tvm": tvm.__version__,
        "machine": platform.machine(),
        "runtime_only": os.environ.get("TVM_USE_RUNTIME_LIB") == "1",
    }


def _against_reference(folder, vm, dev, numpy, tvm):
    """The artifact's reference input run here, compared with PyTorch's output stored beside it."""
    paths = [os.path.join(folder, n) for n in ("reference_input.npy", "reference_output.npy")]
    if not all(os.path.isfile(p) for p in paths):
        return {"reference_max_abs_diff": None, "matches_reference": None}
    reference_in, reference_out = (numpy.load(p) for p in paths)
    got = vm["main"](tvm.runtime.tensor(reference_in, dev)).numpy()
    if got.shape != reference_out.shape:
        return {"reference_max_abs_diff": None, "matches_reference": False}
    difference = numpy.abs(got - reference_out)
    return {
        "reference_max_abs_diff": float(difference.max()),
        "matches_reference": bool((difference <= REFERENCE_ATOL + REFERENCE_RTOL * numpy.abs(reference_out)).all()),
    }


def _read_state(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _is_rpc_server(pid):
    """Alive and still a TVM rpc_server: a recycled PID must never be signalled."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return RPC_MODULE.encode() in fh.read()
    except OSError:
        return False


def _log_tail(path, lines=20):
    try:
        with open(path, "rb") as fh:
            return b"\n".join(fh.read().splitlines()[-lines:]).decode("utf-8", "replace")
    except OSError:
        return ""


def _write_state(path, state):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(state, fh)
    os.replace(tmp, path)


def cmd_server_status(args):
    state = _read_state(args.state)
    if state is None:
        return {"pid": None, "running": False}
    state["running"] = _is_rpc_server(state["pid"])
    state["log_tail"] = _log_tail(state.get("log", ""))
    return state


def _extra_runtime_lib():
    """The board's `libtvm_runtime_extra.so`, found where TVM finds its runtime; None when it has none.

    Located without importing tvm (that would load the whole library into this short-lived process).
    """
    spec = importlib.util.find_spec("tvm")
    folders = [os.environ.get("TVM_LIBRARY_PATH", "")]
    if spec and spec.submodule_search_locations:
        folders += [os.path.join(location, "lib") for location in spec.submodule_search_locations]
    for folder in folders:
        path = os.path.join(folder, EXTRA_RUNTIME_LIB)
        if folder and os.path.isfile(path):
            return os.path.abspath(path)
    return None


def cmd_start_server(args):
    current = cmd_server_status(args)
    if current["running"]:
        current["already_running"] = True
        return current
    os.makedirs(os.path.dirname(os.path.abspath(args.state)), exist_ok=True)
    cmd = [sys.executable, "-m", RPC_MODULE, "--tracker", args.tracker, "--key", args.key]
    if args.host:
        cmd += ["--host", args.host]
    extra = _extra_runtime_lib()
    if extra:
        cmd += ["--load-library", extra]
    env = dict(os.environ, TVM_USE_RUNTIME_LIB="1", PYTHONUNBUFFERED="1")
    with open(args.log, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    state = {
        "pid": proc.pid,
        "tracker": args.tracker,
        "key": args.key,
        "log": args.log,
        "load_library": extra,
        "started": time.time(),
    }
    _write_state(args.state, state)
    time.sleep(args.grace)
    if proc.poll() is not None:
        os.remove(args.state)
        raise RunnerError(f"rpc_server exited at once (code {proc.returncode}):\n{_log_tail(args.log)}")
    state.update(running=True, already_running=False)
    return state


def cmd_stop_server(args):
    state = _read_state(args.state)
    if state is None:
        return {"stopped": None, "reason": "no server recorded"}
    pid = state["pid"]
    if not _is_rpc_server(pid):
        os.remove(args.state)
        return {"stopped": None, "reason": f"recorded server {pid} no longer runs"}
    os.killpg(pid, signal.SIGTERM)  # its own session: the group also holds the workers it forked per session
    deadline = time.time() + args.timeout
    while _is_rpc_server(pid) and time.time() < deadline:
        time.sleep(0.1)
    if _is_rpc_server(pid):
        os.killpg(pid, signal.SIGKILL)
    os.remove(args.state)
    return {"stopped": pid}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="board_runner")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hash").add_argument("dir")
    sub.add_parser("probe")
    smoke = sub.add_parser("smoke")
    smoke.add_argument("dir")
    smoke.add_argument("--runtime", default="cpu", help="TVM runtime device kind: cpu, cuda")
    smoke.add_argument("--number", type=int, default=10)
    smoke.add_argument("--repeat", type=int, default=10)
    smoke.add_argument("--min-repeat-ms", type=int, default=20)
    smoke.add_argument("--warmup", type=int, default=1)
    smoke.add_argument("--seed", type=int, default=0)
    start = sub.add_parser("start-server")
    start.add_argument("--tracker", required=True)
    start.add_argument("--key", required=True)
    start.add_argument("--log", required=True)
    start.add_argument("--host", help="the address the server listens on (default: TVM's, every interface)")
    start.add_argument("--grace", type=float, default=1.0, help="seconds to watch for an immediate exit")
    stop = sub.add_parser("stop-server")
    stop.add_argument("--timeout", type=float, default=10.0)
    for command in (start, stop, sub.add_parser("server-status")):
        command.add_argument("--state", required=True)
    return parser.parse_args(argv)


COMMANDS = {
    "hash": cmd_hash,
    "probe": cmd_probe,
    "smoke": cmd_smoke,
    "start-server": cmd_start_server,
    "stop-server": cmd_stop_server,
    "server-status": cmd_server_status,
}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = COMMANDS[args.command](args)
    except Exception as exc:  # noqa: BLE001 - reported to the workstation as JSON, never a bare traceback
        sys.stdout.write("\n" + json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 1
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
