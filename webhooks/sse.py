"""Reading a server-sent-events stream (the WHATWG `text/event-stream` format), without I/O.

Feed the bytes as they arrive; whole events come out. Hand-written rather than taken from a
package because it must bound what it holds: a line or an event larger than `max_event_bytes`
is dropped as it arrives (and reported as `too_large`) instead of growing in memory, and the
common SSE clients for httpx hold a line of any length.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# A line ends at CRLF, LF or CR.
_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = "\ufeff"


class SseEvent(NamedTuple):
    """One dispatched event. `last_id` is the stream's last event id when it was dispatched."""

    type: str
    data: str
    last_id: str
    too_large: bool = False  # the event passed the size limit; its data was dropped


class SseDecoder:
    """Turns the bytes of one connection into events; `last_event_id` and `retry_ms` hold
    the stream's latest `id:` and `retry:` fields."""

    def __init__(self, max_event_bytes: int, last_event_id: str = "") -> None:
        self.max_event_bytes = max_event_bytes
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None
        self._pending = bytearray()  # the start of a line whose end has not arrived
        self._after_cr = False  # the last chunk ended in CR: an LF first in the next is its pair
        self._dropping_line = False  # the current line passed the limit: skip to its end
        self._started = False
        # The id buffer outlives events: only an `id:` field changes it.
        self._id = last_event_id
        self._type = ""
        self._data: list[str] = []
        self._size = 0
        self._too_large = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events that `chunk` completes, in order."""
        events: list[SseEvent] = []
        if not chunk:
            return events
        start = 1 if self._after_cr and chunk[:1] == b"\n" else 0
        for end in _LINE_END.finditer(chunk, start):
            self._end_line(chunk[start : end.start()], events)
            start = end.end()
        self._after_cr = chunk.endswith(b"\r")
        self._hold(chunk[start:])
        return events

    def _hold(self, partial: bytes) -> None:
        if self._dropping_line:
            return
        self._pending += partial
        if len(self._pending) > self.max_event_bytes:
            self._pending.clear()
            self._dropping_line = True
            self._too_large = True

    def _end_line(self, tail: bytes, events: list[SseEvent]) -> None:
        if self._dropping_line:
            self._dropping_line = False
            return
        line = bytes(self._pending) + tail if self._pending else tail
        self._pending.clear()
        event = self._line(line.decode("utf-8", errors="replace"))
        if event is not None:
            events.append(event)

    def _line(self, line: str) -> SseEvent | None:
        if not self._started:
            self._started = True
            line = line.removeprefix(_BOM)
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment, such as a keep-alive
        self._size += len(line)
        if self._size > self.max_event_bytes:
            self._too_large = True
            self._data.clear()
        field, _, value = line.partition(":")
        self._field(field, value.removeprefix(" "))
        return None

    def _field(self, field: str, value: str) -> None:
        if field == "data" and not self._too_large:
            self._data.append(value)
        elif field == "event":
            self._type = value
        elif field == "id" and "\0" not in value:
            self._id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)

    def _dispatch(self) -> SseEvent | None:
        self.last_event_id = self._id
        event = None
        if self._too_large:
            event = SseEvent(self._type or "message", "", self._id, too_large=True)
        elif self._data:
            event = SseEvent(self._type or "message", "\n".join(self._data), self._id)
        self._reset_event()
        return event

    def _reset_event(self) -> None:
        self._type = ""
        self._data = []
        self._size = 0
        self._too_large = False
