"""The layering holds: import-linter's contracts in pyproject.toml pass, and no two packages import each other
through a cycle of modules. Read from the source by grimp (import-linter's engine): nothing is imported or run."""

from __future__ import annotations

import logging
from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]
BOARD_RUNNER = "edgeprune.devices.remote.board_runner"


def package_of(module: str) -> str:
    """The top-level part a module belongs to: `edgeprune.devices.remote.ssh` -> `edgeprune.devices`."""
    return ".".join(module.split(".")[:2])


def cycles_between_packages(graph: grimp.ImportGraph) -> list[list[str]]:
    """One chain per import of a module of another package that imports its importer back, directly or not:
    every cycle that crosses packages contains such an import. Each chain starts and ends at the importer."""
    found = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if package_of(imported) != package_of(importer):
                back = graph.find_shortest_chain(importer=imported, imported=importer)
                if back:
                    found.append([importer, *back])
    return found


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("edgeprune", cache_dir=None)


def test_no_import_cycle_between_modules_of_different_packages(graph: grimp.ImportGraph) -> None:
    assert cycles_between_packages(graph) == []


def test_a_cycle_between_packages_is_found() -> None:
    """The check above can fail: a cycle through two packages is reported, one inside a package is not."""
    graph = grimp.ImportGraph()
    for importer, imported in [("p.a.x", "p.b.y"), ("p.b.y", "p.b.z"), ("p.b.z", "p.a.x"), ("p.c.u", "p.c.v")]:
        graph.add_import(importer=importer, imported=imported)
    graph.add_import(importer="p.c.v", imported="p.c.u")
    assert cycles_between_packages(graph) == [
        ["p.a.x", "p.b.y", "p.b.z", "p.a.x"],
        ["p.b.z", "p.a.x", "p.b.y", "p.b.z"],
    ]


def test_the_layer_contracts_hold(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """What `make lint` runs (lint-imports); a broken contract prints the offending import chain."""
    monkeypatch.chdir(ROOT)
    # import-linter configures logging with dictConfig, which disables every logger that exists: the later tests
    # of this process (test_logs) get theirs back as they were
    loggers = [x for x in logging.root.manager.loggerDict.values() if isinstance(x, logging.Logger)]
    disabled = [x.disabled for x in loggers]
    try:
        code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    finally:
        for logger, was in zip(loggers, disabled, strict=True):
            logger.disabled = was
    assert code == 0, capsys.readouterr().out


def test_the_board_runner_imports_nothing_from_edgeprune(graph: grimp.ImportGraph) -> None:
    """It runs on the board, where edgeprune is not installed."""
    assert graph.find_modules_directly_imported_by(BOARD_RUNNER) == set()
