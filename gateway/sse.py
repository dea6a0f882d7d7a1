"""Server-sent event frames for task status, encoded once per snapshot and shared by every subscriber.

A status change reaches every subscriber of the task at once; rendering the public view (two HMAC
signatures, a pydantic model, JSON) for each of them would cost the fan-out per subscriber. `FrameCache`
renders a snapshot once per signing owner and queue position (a pending job's place moves without a
new version) and hands the same bytes to all; entries live one second, so signed links and queue
positions in a cached frame are never older than that.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from schemas.queues import QueuePosition
from schemas.status import TaskStatus, TaskStatusResponse

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""What every event stream answers with besides its media type (no caching, no proxy buffering)."""

MEDIA_TYPE = "text/event-stream"
KEEPALIVE = b": keep-alive\r\n\r\n"
"""The comment sent while nothing changes."""

_HIDDEN = {"version", "updated_at"}


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded event: `data` (id = version, event = status, data = the public JSON), `visible`, the
    snapshot without its version and time, equal for snapshots that show nothing new, and `queue`, the
    queue position it shows (None unless pending)."""

    visible: str
    data: bytes
    queue: QueuePosition | None


def encode_frame(status: TaskStatus, response: TaskStatusResponse) -> Frame:
    """The event for `status`, showing `response` (compact JSON: one `data:` line)."""
    data = f"id: {status.version}\r\nevent: {status.status.value}\r\ndata: {response.model_dump_json()}\r\n\r\n"
    queue = None if response.queue_position is None else QueuePosition(response.queue_position, response.eta_s)
    return Frame(visible=status.model_dump_json(exclude=_HIDDEN), data=data.encode(), queue=queue)


class FrameCache:
    """Recently encoded frames by (task id, version, signing owner, queue position), each reused for `ttl_s`
    seconds."""

    def __init__(self, max_frames: int = 4096, ttl_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._frames: OrderedDict[tuple[str, int, str, QueuePosition | None], tuple[float, Frame]] = OrderedDict()
        self._max_frames = max_frames
        self._ttl_s = ttl_s
        self._clock = clock

    def __len__(self) -> int:
        return len(self._frames)

    def frame(
        self,
        status: TaskStatus,
        owner: str,
        render: Callable[[], TaskStatusResponse],
        queue: QueuePosition | None = None,
    ) -> Frame:
        """The frame of `status` as signed for `owner` and showing `queue`: cached, or encoded from `render()` now."""
        key = (status.task_id, status.version, owner, queue)
        now = self._clock()
        cached = self._frames.get(key)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        frame = encode_frame(status, render())
        self._frames[key] = (now, frame)
        self._frames.move_to_end(key)
        while len(self._frames) > self._max_frames:
            self._frames.popitem(last=False)
        return frame
