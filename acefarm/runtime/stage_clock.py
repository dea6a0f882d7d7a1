"""One job's stage clock: how long each stage its progress reports enter lasted."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from acefarm.infra.metrics import STAGE_SECONDS
from schemas.status import Stage


@dataclass(frozen=True)
class StageSeconds:
    """What a stopped clock measured: seconds per stage entered (or recorded), and the whole span."""

    by_stage: dict[Stage, float]
    total_s: float


class StageClock:
    """Times a job's stages: each lasts from its first report until the next stage's (thread-safe).

    With `observe`, each stage's time also goes to `acefarm_stage_seconds` when the stage ends. The runtime
    starts one per job (`JobContext.stages`): its progress reports enter the stages, and a worker that reports
    timings (the GPU consumer's `used.timings`) reads the same clock.
    """

    def __init__(self, *, observe: bool = False) -> None:
        self._observe = observe
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._current: Stage | None = None
        self._since = self._started
        self._seconds: dict[Stage, float] = {}

    def enter(self, stage: Stage) -> None:
        """The job reports `stage` now (repeated reports of the current stage change nothing)."""
        with self._lock:
            if stage is self._current:
                return
            self._close(time.monotonic())
            self._current = stage

    def record(self, stage: Stage, seconds: float) -> None:
        """Count `seconds` of `stage` timed before the clock began (inputs fetched while the previous job held the
        engine): in the stage and in the total, not the wait between."""
        with self._lock:
            self._add(stage, seconds)
            self._started -= seconds

    def stop(self) -> StageSeconds:
        """End the current stage; the seconds per stage so far and the total since the clock began."""
        now = time.monotonic()
        with self._lock:
            self._close(now)
            self._current = None
            return StageSeconds(dict(self._seconds), now - self._started)

    def _close(self, now: float) -> None:
        if self._current is not None:
            self._add(self._current, now - self._since)
        self._since = now

    def _add(self, stage: Stage, seconds: float) -> None:
        self._seconds[stage] = self._seconds.get(stage, 0.0) + seconds
        if self._observe:
            STAGE_SECONDS.labels(stage.value).observe(seconds)
