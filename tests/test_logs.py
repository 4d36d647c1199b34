"""TVM's output goes where a command sends it (its log file, the terminal under --verbose), nowhere else."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edgeprune.logs import tvm_log, tvm_logger


def test_tvm_lines_reach_the_log_not_a_root_handler_tvm_set_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TVM's legalization calls logging.info on the root logger, which installs a terminal handler there: the
    tuning lines must not reach it (CI saw MetaSchedule's table on a run's terminal once NCHWc convs were
    legalized)."""
    with caplog.at_level(logging.INFO):  # a root handler, as logging.basicConfig would add
        with tvm_log(tmp_path / "logs" / "tvm.log") as path:
            tvm_logger().info("Total trials: 2")
        assert "Total trials" in path.read_text()
        assert "Total trials" not in caplog.text
        tvm_logger().warning("after the block: back to the root's handlers")
        assert "after the block" in caplog.text


def test_a_logger_a_users_dictconfig_disabled_still_writes_the_commands_log(tmp_path: Path) -> None:
    """`logging.config.dictConfig` disables every logger that exists when it runs (its default): a user's training
    script that configures logging after importing edgeprune must still get the tuning log it asked for."""
    logger = tvm_logger()
    logger.disabled = True  # what dictConfig(disable_existing_loggers=True) does to it
    try:
        with tvm_log(tmp_path / "tvm.log") as path:
            logger.info("Total trials: 2")
        assert "Total trials" in path.read_text()
        assert logger.disabled, "the user's setting is theirs again after the block"
    finally:
        logger.disabled = False
