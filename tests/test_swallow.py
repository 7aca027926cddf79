"""Swallowed clean-up failures are logged, never silent."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import jupyter_agentbuild
from jupyter_agentbuild.swallow import swallowed


def test_a_swallowed_failure_is_logged_and_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("jupyter_agentbuild.test")
    with caplog.at_level(logging.DEBUG, logger="jupyter_agentbuild.test"):
        with swallowed(log, "closing the thing"):
            raise OSError("disk on fire")
        with swallowed(log, "quiet close", level=logging.DEBUG, describe=lambda e: "redacted"):
            raise ValueError("e2b_secret_key")
        with swallowed(log, "nothing wrong"):
            pass
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "agentbuild: closing the thing failed (OSError: disk on fire)"),
        (logging.DEBUG, "agentbuild: quiet close failed (ValueError: redacted)"),
    ]


def test_no_failure_is_swallowed_silently_in_the_package() -> None:
    root = Path(jupyter_agentbuild.__file__).parent
    silent = [
        f"{path.relative_to(root)}:{number}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "swallow.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "suppress(Exception)" in line or "suppress(BaseException)" in line
    ]
    assert silent == []
