"""Shared fixtures. The RPC farm is real: a TVM tracker and servers on 127.0.0.1, on a free port."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from edgeprune.data import Dataset, load_dataset
from edgeprune.devices.base import Device

SHIPPED_PROFILES = Path(__file__).resolve().parents[1] / "device_profiles"  # the example boards (package data too)
# The fast tier (`make test-fast`, `pytest -m fast`): logic on the fake device and everything else that needs no RPC
# farm, sshd, qemu or TVM tuning. One list, so a module's tier is decided here and not in each file.
FAST_MODULES = {
    "test_bench_budget_measured",
    "test_bench_pruning",
    "test_board_wheels",
    "test_confidence",
    "test_data",
    "test_forked",
    "test_device_profiles",
    "test_health",
    "test_latency_model",
    "test_layers",
    "test_logs",
    "test_loop",
    "test_lut_lock",
    "test_models",
    "test_pipeline_config",
    "test_profile_health",
    "test_pruning_criteria",
    "test_pruning_groups",
    "test_pruning_knapsack",
    "test_pruning_ranking",
    "test_pruning_schedule",
    "test_toolchain",
    "test_verify_relative",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in FAST_MODULES:
            item.add_marker(pytest.mark.fast)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """torch's generator at seed 0 before each test's fixtures: a fixture's or test's random model is the same
    network in every run, so an outcome never rests on an unseeded draw (one assertion held 3 runs in 4) or on
    which tests ran before it. Seeded before the fixtures, not again before the body: a fixture's draws and the
    test's continue one stream rather than repeat each other."""
    torch.manual_seed(0)
    return (yield)


def free_port() -> int:
    """A free port with a free neighbour range: the farm puts its servers just above the tracker."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def isolated_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pytest.MonkeyPatch]:
    """Farm state, tracker port and LUTs of the test session live in temp dirs, never the user's.

    The shipped board profiles are copied into the temp profiles dir, so LUTs written by tests land there.
    """
    profiles = tmp_path_factory.mktemp("device_profiles")
    for path in SHIPPED_PROFILES.glob("*.toml"):
        shutil.copy(path, profiles / path.name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEPRUNE_PROFILES_DIR", str(profiles))
        mp.setenv("EDGEPRUNE_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        mp.setenv("EDGEPRUNE_LOCAL_PORT", str(free_port()))
        yield mp


@pytest.fixture(scope="session")
def local_farm(isolated_env: pytest.MonkeyPatch) -> Iterator[Device]:
    """One farm (tracker + 2 servers under key 'local') shared by the whole session; stopped at the end."""
    from edgeprune.devices import farm
    from edgeprune.devices.profile import local_device

    device = local_device()
    farm.up(servers=2, port=device.tracker_port, key=device.key)
    try:
        yield device
    finally:
        farm.down(device.tracker_port)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Torch at one thread for a module (what the CLI's --threads default sets): faster on 2 busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    """scikit-learn's digits at 1x8x8, the split of seed 0."""
    return load_dataset("digits", (1, 8, 8), seed=0)
