"""Device profiles: the shipped ones load, and every malformed case names the file and the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprune.devices.base import TimingSettings
from edgeprune.devices.profile import load_device, load_profile, profiles_dir
from edgeprune.devices.tuning import TuningConfig
from edgeprune.errors import EdgepruneError
from tests.loopback_board import edgeprune_main

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "edgeprune" / "boards"  # the package data
EXAMPLES = ROOT / "device_profiles"  # the repository's example boards: a clone's profiles folder

VALID = """
name = "{name}"
description = "test board"
[target]
kind = "llvm"
mtriple = "aarch64-linux-gnu"
mcpu = "cortex-a72"
mattr = ["+neon"]
num-cores = 4
[tracker]
host = "127.0.0.1"
port = 9190
key = "board"
[ssh]
host = "board.local"
user = "pi"
key_file = "~/.ssh/id_ed25519"
"""


def write(tmp_path: Path, text: str, name: str = "board") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text.format(name=name))
    return path


def test_shipped_profiles_load() -> None:
    paths = sorted(SHIPPED.glob("*.toml"))
    assert {p.stem for p in paths} >= {"raspberry-pi-4", "raspberry-pi-5", "jetson-nano", "jetson-orin-nano"}
    for path in paths:
        device = load_profile(path)
        if path.stem == "h100-sm90":  # the borrowed GPU machine: x86-64, no SSH (tools/gpu_bundle.py carries to it)
            assert device.kind == "cuda" and device.architecture == "x86_64" and device.ssh is None
            continue
        assert device.needs_cross_link and device.architecture == "aarch64"
        assert device.ssh is not None and device.ssh.key_file
        assert device.timings_are_real is (device.kind != "emulated")
        if device.kind == "cuda":  # a Jetson's GPU: a warp is its grid step
            assert device.target["kind"] == "cuda" and device.channel_step == 32
        else:
            assert device.kind in ("board", "emulated") and device.target["kind"] == "llvm"
            assert device.channel_step == 4


def test_the_package_ships_the_repositorys_example_boards() -> None:
    """The boards a clone has in device_profiles/ are the ones `pip install` ships, byte for byte: the package's
    files link to them, and a copy that drifted (or a board added to one side only) fails here."""
    from edgeprune.devices.profile import SHIPPED_DIR

    examples = {p.name: p.read_bytes() for p in EXAMPLES.glob("*.toml")}
    shipped = {p.name: p.read_bytes() for p in SHIPPED_DIR.glob("*.toml")}
    assert len(examples) >= 6 and examples == shipped
    assert all(p.resolve().parent == EXAMPLES for p in SHIPPED_DIR.glob("*.toml"))  # one set of files, not two


def test_shipped_profiles_show_a_tuning_example_that_loads(tmp_path: Path) -> None:
    """Each shipped profile ends with a commented [tuning] example: commented it changes nothing, uncommented
    it loads as deeper tuning for that board."""
    for path in sorted(SHIPPED.glob("*.toml")):
        assert load_profile(path).tuning == TuningConfig()
        text = path.read_text()
        head, marker, example = text.partition("\n# [tuning]\n")
        assert marker and all(line.startswith("# ") for line in example.splitlines()), path.name
        uncommented = tmp_path / path.name
        uncommented.write_text(head + "\n[tuning]\n" + example.replace("# ", ""))
        tuning = load_profile(uncommented).tuning
        assert tuning.profile_trials > TuningConfig().profile_trials and tuning.minutes, path.name


def test_emulated_pi_is_the_pi_4_target_on_loopback_with_this_machines_ssh() -> None:
    """Its user, key and Python are this machine's (not in the profile); everything listens on 127.0.0.1."""
    emulated, pi = (load_profile(SHIPPED / f"{name}.toml") for name in ("emulated-pi", "raspberry-pi-4"))
    assert emulated.target == pi.target and emulated.cross_compiler == pi.cross_compiler
    assert emulated.ssh is not None and emulated.ssh.host == emulated.tracker_host == "127.0.0.1"
    assert emulated.remote_python.endswith("edgeprune-bin/python") and emulated.to_json()["timings_are_real"] is False


def test_every_kind_is_registered_whatever_was_imported_first() -> None:
    """Kinds register when the package loads, not as a side effect of importing the profile loader: a fresh
    process that imports only the interface can create a board."""
    code = (
        "from edgeprune.devices import base; from pathlib import Path; "
        "d = base.create('board', name='b', description='', target={'kind': 'llvm'}, tracker_host='127.0.0.1', "
        "tracker_port=9190, key='b', profiles_root=Path('.')); print(type(d).__name__, ' '.join(base.kinds()))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=SHIPPED.parents[1])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["BoardDevice", "board", "cuda", "emulated", "local", "local-gpu"]


def _elf_header(machine: int) -> bytes:
    """The first 20 bytes of a little-endian 64-bit ELF shared object for `machine` (e_machine)."""
    return b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + (3).to_bytes(2, "little") + machine.to_bytes(2, "little")


def test_the_device_names_a_library_built_for_another_cpu(tmp_path: Path) -> None:
    """The ELF check is the Device's: code for its CPU passes, another CPU's is named, a `.tar` (no ELF header
    here: the board links it) is left to the board."""
    pi = load_profile(SHIPPED / "raspberry-pi-4.toml")
    arm, x86, tar = tmp_path / "arm.so", tmp_path / "x86.so", tmp_path / "model.tar"
    arm.write_bytes(_elf_header(183))
    x86.write_bytes(_elf_header(62))
    tar.write_bytes(b"model.so".ljust(512, b"\0"))
    assert pi.library_mismatch(arm) is None and pi.library_mismatch(tar) is None
    assert pi.library_mismatch(x86) == f"{x86} is x86_64 code; device 'raspberry-pi-4' runs aarch64"


def test_a_local_port_variable_that_is_no_port_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPRUNE_LOCAL_PORT", "9190x")
    with pytest.raises(EdgepruneError, match=r"\$EDGEPRUNE_LOCAL_PORT is '9190x', not a port number"):
        load_device("local")


def test_valid_profile_fields(tmp_path: Path) -> None:
    device = load_profile(write(tmp_path, VALID))
    assert device.tracker == "127.0.0.1:9190"
    assert device.key == "board"
    assert device.target["num-cores"] == 4
    assert device.ssh is not None and device.ssh.port == 22 and device.ssh.user == "pi"
    assert device.remote_python == "python3"


def test_kind_and_timing(tmp_path: Path) -> None:
    old = load_profile(write(tmp_path, VALID))  # written before `kind` existed: an RPC board
    assert old.kind == "board" and old.timing == TimingSettings()
    text = VALID.replace('description = "test board"', 'kind = "board"') + "[timing]\nrepeat = 3\nmin_repeat_ms = 5\n"
    device = load_profile(write(tmp_path, text, name="tuned"))
    assert device.kind == "board" and device.timing == TimingSettings(repeat=3, min_repeat_ms=5)
    assert device.timing.with_counts(repeat=9).repeat == 9 and device.timing.with_counts().repeat == 3


def test_tuning_table_overrides_the_defaults_and_commands_override_it(tmp_path: Path) -> None:
    assert load_profile(write(tmp_path, VALID)).tuning == TuningConfig()  # a profile without [tuning] loads as before
    text = VALID + (
        "[tuning]\ntrials = 4\nprofile_trials = 128\nminutes = 30\nstrategy = 'evolutionary'\npopulation = 64\n"
        "cost_model = 'xgb'\ntask_scheduler = 'gradient'\nops = ['all']\ntransplant = true\n"
    )
    tuning = load_profile(write(tmp_path, text, name="deep")).tuning
    assert (tuning.trials, tuning.profile_trials, tuning.minutes, tuning.population) == (4, 128, 30.0, 64)
    assert (tuning.strategy, tuning.cost_model, tuning.task_scheduler) == ("evolutionary", "xgb", "gradient")
    assert tuning.tunes("fused_mean") and tuning.transplant and tuning.max_trials is None
    profile_run = tuning.for_profile()
    assert profile_run.trials == 128 and not profile_run.transplant and profile_run.strategy == "evolutionary"
    assert tuning.with_changes(trials=8, minutes=None).trials == 8 and tuning.with_changes(trials=8).minutes == 30.0
    assert TuningConfig().tunes("fused_conv2d_add_relu") and not TuningConfig().tunes("fused_mean")
    assert TuningConfig.from_table(TuningConfig().to_json()) == TuningConfig()


@pytest.mark.parametrize(
    "changes",
    [{"trials": -1}, {"max_trials": 0}, {"minutes": -2.0}, {"population": 1}, {"strategy": "grid"}, {"ops": ()}],
)
def test_bad_tuning_settings_are_refused_by_name(changes: dict[str, object]) -> None:
    with pytest.raises(EdgepruneError, match=f"tuning.{next(iter(changes))}"):
        TuningConfig().with_changes(**changes)


def test_a_boolean_is_no_number_in_the_tuning_table(tmp_path: Path) -> None:
    with pytest.raises(EdgepruneError, match=r"tuning\.minutes.*expected .*got bool True"):
        load_profile(write(tmp_path, VALID + "\n[tuning]\nminutes = true\n", name="yes"))


def test_relative_ssh_files_are_beside_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = VALID.replace('key_file = "~/.ssh/id_ed25519"', 'key_file = "keys/board"\nknown_hosts = "known_hosts"')
    (tmp_path / "boards").mkdir()
    path = write(tmp_path / "boards", text)
    monkeypatch.chdir(tmp_path)  # run from elsewhere: the files are still the profile's neighbours
    ssh = load_profile(Path("boards") / path.name).ssh
    assert ssh is not None
    assert ssh.key_path == tmp_path / "boards" / "keys" / "board"
    assert ssh.known_hosts_path == tmp_path / "boards" / "known_hosts"


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda t: t.replace('key = "board"\n', ""), "tracker.key"),
        (lambda t: t.replace("port = 9190", 'port = "9190"'), "tracker.port"),
        (lambda t: t.replace("num-cores = 4", "num-cores = 4.5"), "target.num-cores"),
        (lambda t: t.replace('kind = "llvm"', 'kind = "cuda"'), "target.kind"),
        (lambda t: t.replace('mcpu = "cortex-a72"', 'mcpu = "cortex-a72"\nmcpus = "x"'), "target.mcpus"),
        (lambda t: t.replace('mattr = ["+neon"]', "mattr = [1]"), "target.mattr"),
        (lambda t: t.replace('user = "pi"', 'user = "pi"\npassword = "hunter2"'), "ssh.password"),
        (lambda t: t.replace('user = "pi"\n', ""), "ssh.user"),
        (lambda t: t.replace("port = 9190", "port = 70000"), "tracker.port"),
        (lambda t: t.replace('name = "{name}"', 'name = "other"'), "name"),
        (lambda t: t.replace("key_file =", "keyfile ="), "ssh.keyfile"),
        (lambda t: t + '[remote]\nworkdr = "/tmp"\n', "remote.workdr"),
        (lambda t: t + '[[extra]]\npassword = "hunter2"\n', "extra.[0].password"),
        (lambda t: t + 'colour = "red"\n', "ssh.colour"),
        (lambda t: t.replace('description = "test board"', 'kind = "toaster"'), "kind"),
        (lambda t: t.replace('description = "test board"', 'kind = "local"'), "kind"),
        (lambda t: t + "[timing]\nrepeat = 0\n", "timing"),
        (lambda t: t + "[timing]\nrepeats = 3\n", "timing.repeats"),
        (lambda t: t + '[timing]\ncache_flush = "yes"\n', "timing.cache_flush"),
        (lambda t: t + "[tuning]\ntrial = 64\n", "tuning.trial"),
        (lambda t: t + '[tuning]\ntrials = "64"\n', "tuning.trials"),
        (lambda t: t + "[tuning]\ntrials = true\n", "tuning.trials"),
        (lambda t: t + "[tuning]\nprofile_trials = 0\n", "tuning"),
        (lambda t: t + '[tuning]\nstrategy = "genetic"\n', "tuning"),
        (lambda t: t + '[tuning]\ncost_model = "mlp"\n', "tuning"),
        (lambda t: t + '[tuning]\ntask_scheduler = "fifo"\n', "tuning"),
        (lambda t: t + "[tuning]\nminutes = 0\n", "tuning"),
        (lambda t: t + "[tuning]\nops = []\n", "tuning"),
        (lambda t: t + "[tuning]\nops = [3]\n", "tuning"),
        (lambda t: t + '[tuning]\ntransplant = "yes"\n', "tuning.transplant"),
    ],
)
def test_malformed_profile_names_file_and_field(tmp_path: Path, edit, field: str) -> None:
    path = write(tmp_path, edit(VALID))
    with pytest.raises(EdgepruneError) as info:
        load_profile(path)
    assert str(path) in info.value.message
    assert f"'{field}'" in info.value.message


def test_profile_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin.toml"
    path.write_bytes('name = "latin"\ndescription = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(EdgepruneError, match="latin.toml: not a UTF-8 text file"):
        load_profile(path)


def test_bad_toml_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("name = [unclosed")
    with pytest.raises(EdgepruneError, match="broken.toml: not valid TOML"):
        load_profile(path)


def test_unknown_device_lists_known_ones(isolated_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(EdgepruneError) as info:
        load_device("no-such-board")
    assert "raspberry-pi-4" in (info.value.hint or "")


def test_devices_json_lists_local_first_and_shipped_boards(isolated_env: pytest.MonkeyPatch) -> None:
    done = edgeprune_main("devices", "--json")  # in this process: no 4-6 s of imports
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert listed[0]["name"] == "local"
    assert listed[0]["target"]["kind"] == "llvm" and listed[0]["target"]["num-cores"] >= 1
    names = {d["name"] for d in listed}
    assert {"raspberry-pi-4", "raspberry-pi-5", "jetson-nano", "jetson-orin-nano"} <= names
    assert listed[0]["ssh"] is None  # local is reached through its farm only
    pi = next(d for d in listed if d["name"] == "raspberry-pi-4")
    assert pi["ssh"] == {"host": "raspberrypi4.local", "port": 22, "user": "pi"}
    for entry in listed:
        assert set(entry) == {"name", "kind", "target", "tracker", "key", "ssh", "timings_are_real"}
        host, port = entry["tracker"].rsplit(":", 1)
        assert host and int(port) > 0


def test_a_broken_profile_is_listed_with_its_error_beside_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, VALID, "good")
    (tmp_path / "bad.toml").write_text("name = [unclosed\n")
    env = {**os.environ, "EDGEPRUNE_PROFILES_DIR": str(tmp_path)}
    monkeypatch.setenv("EDGEPRUNE_PROFILES_DIR", str(tmp_path))
    done = edgeprune_main("devices", "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    names = {entry.get("name") for entry in listed}
    assert {"local", "good", "raspberry-pi-4"} <= names  # the user's profile and the shipped boards still load
    broken = [entry for entry in listed if "error" in entry]
    assert [Path(b["source"]).name for b in broken] == ["bad.toml"] and "not valid TOML" in broken[0]["error"]
    run = [sys.executable, "-m", "edgeprune", "devices"]  # a child: rich takes its width from COLUMNS at start
    table = subprocess.run(run, capture_output=True, text=True, check=True, env={**env, "COLUMNS": "300"}).stderr
    assert "broken" in table and str(tmp_path) in table


def test_measurements_go_to_the_user_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without $EDGEPRUNE_PROFILES_DIR or ./device_profiles: the XDG data folder, never the package's."""
    monkeypatch.delenv("EDGEPRUNE_PROFILES_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    assert profiles_dir() == tmp_path / "data" / "edgeprune"
    device = load_device("raspberry-pi-4")  # a shipped board, found by name
    assert device.source is not None and device.source.parent == SHIPPED
    assert device.lut_dir == tmp_path / "data" / "edgeprune" / "raspberry-pi-4"
    (tmp_path / "device_profiles").mkdir()  # a project's own folder wins, as before
    assert profiles_dir() == tmp_path / "device_profiles"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/path")  # invalid under XDG: ignored
    monkeypatch.chdir(tmp_path / "device_profiles")
    assert profiles_dir() == Path.home() / ".local" / "share" / "edgeprune"
