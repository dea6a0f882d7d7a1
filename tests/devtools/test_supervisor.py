"""`acefarm dev`'s supervisor with real child processes: a service that exits is restarted with growing
waits and the reason logged; stopping ends every service."""

from __future__ import annotations

import os
import sys
import time

import pytest
import structlog

from acefarm.devtools.devrun import RESTART_BACKOFF_S, Supervisor
from acefarm.runtime.service import EXIT_WEDGED

pytestmark = pytest.mark.timeout(60)


def supervisor() -> Supervisor:
    return Supervisor(dict(os.environ), command=(sys.executable, "-c"))


def run_checks(sup: Supervisor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sup.check()
        time.sleep(0.05)


def test_a_service_that_exits_is_restarted_with_backoff_and_the_reason_is_logged() -> None:
    sup = supervisor()
    with structlog.testing.capture_logs() as logs:
        child = sup.start("wedged", [f"import sys; sys.exit({EXIT_WEDGED})"])
        run_checks(sup, RESTART_BACKOFF_S[0] + RESTART_BACKOFF_S[1] + 1.5)
    sup.stop_all()
    exits = [e for e in logs if e["event"] == "dev.service_exited"]
    restarts = [e for e in logs if e["event"] == "dev.restarting"]
    starts = [e for e in logs if e["event"] == "dev.start"]
    assert len(exits) >= 2 and len(starts) == len(exits) + (child.restart_at is None)
    assert exits[0]["code"] == EXIT_WEDGED and "deadline" in exits[0]["reason"]
    assert [r["in_s"] for r in restarts[:2]] == list(RESTART_BACKOFF_S[:2]), "each exit in a row waits longer"


def test_stop_all_ends_every_running_service() -> None:
    sup = supervisor()
    children = [sup.start(f"sleeper-{n}", ["import time; time.sleep(60)"]) for n in range(2)]
    sup.check()
    assert all(c.process.poll() is None for c in children), "running services are left alone"
    started = time.monotonic()
    sup.stop_all()
    assert all(c.process.poll() is not None for c in children) and time.monotonic() - started < 10
