"""Per-stage timings of one generation job, from the stages its progress reports enter."""

from __future__ import annotations

import threading
import time

from schemas.results import StageTimings
from schemas.status import Stage

_FIELDS: dict[Stage, str] = {
    Stage.LOADING: "inputs_s",
    Stage.ENCODING: "encode_s",
    Stage.DIFFUSION: "diffusion_s",
    Stage.DECODING: "decode_s",
    Stage.UPLOADING: "upload_s",
}


class StageClock:
    """Times a job's stages: each stage lasts from its first report until the next stage's (thread-safe)."""

    def __init__(self) -> None:
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
            self._seconds[stage] = self._seconds.get(stage, 0.0) + seconds
            self._started -= seconds

    def stop(self, queue_s: float | None = None) -> StageTimings:
        """End the current stage; the timings so far, with the queue wait and the total since the clock began."""
        now = time.monotonic()
        with self._lock:
            self._close(now)
            self._current = None
            fields = {_FIELDS[stage]: round(seconds, 4) for stage, seconds in self._seconds.items() if stage in _FIELDS}
        queue = None if queue_s is None else round(max(queue_s, 0.0), 4)
        return StageTimings(queue_s=queue, total_s=round(now - self._started, 4), **fields)

    def _close(self, now: float) -> None:
        if self._current is not None:
            self._seconds[self._current] = self._seconds.get(self._current, 0.0) + now - self._since
        self._since = now
