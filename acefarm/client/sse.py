"""Reading a `text/event-stream` line by line (the gateway's `GET /tasks/{id}/events`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerEvent:
    """One dispatched server-sent event."""

    event: str
    data: str
    id: str | None


class EventDecoder:
    """Turns the lines of an event stream into events, per the SSE rules; comments (keep-alives) are skipped."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, line: str) -> ServerEvent | None:
        """Take one line (without its line break); the event it completes, if any."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> ServerEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerEvent(event=event or "message", data="\n".join(data), id=self._id)
