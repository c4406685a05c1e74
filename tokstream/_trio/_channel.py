"""The receive channel of ``Client.start_stream``: a stream's events, a network read at a time.

:class:`EventChannel` is a ``trio.abc.ReceiveChannel[Event]`` backed by a
deque. The stream's task (``pump`` in ``_stream.py``) puts each network
read's events in at once; the consumer takes them one by one, and a
``receive()`` that finds events waiting returns at once, without a pass through
trio's scheduler. So ``async for event in channel`` costs about what iterating
``Client.stream()`` costs, where a ``trio.MemoryReceiveChannel`` costs a
scheduler pass per event.

* Backpressure: the stream's task waits while about ``max_buffer`` events are
  unread (it adds a read's events whole, so the buffer can exceed the bound
  by one read).
* Closing the channel (``aclose``) cancels the stream's task at once, which
  closes its response (vLLM then aborts the request); unread events are
  dropped.
* After the stream's last event, ``receive()`` raises ``trio.EndOfChannel``
  (and ``async for`` ends); after ``aclose()``, ``trio.ClosedResourceError``.
* One task receives at a time (``trio.BusyResourceError`` otherwise); there
  is no ``clone()``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import outcome
import trio

from .._events import Event
from ._util import NoPublicConstructor

__all__ = ["EventChannel"]


class EventChannel(trio.abc.ReceiveChannel[Event], metaclass=NoPublicConstructor):
    """The events of one stream started with ``Client.start_stream`` (see the module docs).

    Only ``Client.start_stream`` builds one (there is no public constructor).
    """

    __slots__ = ("_closed", "_done", "_events", "_max", "_receiver", "_scope", "_sender")

    def __init__(self, max_buffer: int) -> None:
        self._events: deque[Event] = deque()
        self._max = max(max_buffer, 1)
        self._done = False  # the stream's last event is in
        self._closed = False  # the receiver closed the channel
        self._receiver: trio.lowlevel.Task | None = None
        self._sender: trio.lowlevel.Task | None = None
        self._scope: trio.CancelScope | None = None

    def __repr__(self) -> str:
        return f"<tokstream.EventChannel buffered={len(self._events)} ended={self._done}>"

    # -- the receiving side ----------------------------------------------------------

    def receive_nowait(self) -> Event:
        """Return the next event if one is waiting.

        Raises:
            trio.WouldBlock: No event is waiting yet.
            trio.EndOfChannel: The stream's last event was received.
            trio.ClosedResourceError: The channel was closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("this EventChannel was closed")
        events = self._events
        if events:
            event = events.popleft()
            if self._sender is not None and len(events) < self._max:
                self._wake_sender()
            return event
        if self._done:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> Event:
        """Return the next event, waiting for the next network read if none is buffered.

        A checkpoint for cancellation; it yields to other tasks only when it
        has to wait.

        Raises:
            trio.EndOfChannel: The stream's last event was received.
            trio.ClosedResourceError: The channel was closed.
            trio.BusyResourceError: Another task is receiving.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            return self.receive_nowait()
        except trio.WouldBlock:
            pass
        if self._receiver is not None:
            raise trio.BusyResourceError("another task is receiving from this EventChannel")
        self._receiver = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._receiver = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        return self.receive_nowait()

    async def __anext__(self) -> Event:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Close the channel: stop the stream now (its response is closed); idempotent.

        Unread events are dropped; later receives raise ``ClosedResourceError``.
        """
        if not self._closed:
            self._closed = True
            self._events.clear()
            if self._scope is not None:
                self._scope.cancel()
            self._wake_sender()
            if self._receiver is not None:
                task, self._receiver = self._receiver, None
                trio.lowlevel.reschedule(task, outcome.Value(None))
        await trio.lowlevel.checkpoint()

    # -- the stream's side (``pump``) ---------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the receiver closed the channel."""
        return self._closed

    def attach(self, scope: trio.CancelScope) -> None:
        """Name the cancel scope that closing the channel cancels (the stream task's)."""
        self._scope = scope

    def put(self, events: Iterable[Event]) -> None:
        """Add one read's events; wake the receiver. Dropped once the channel is closed."""
        if self._closed:
            return
        self._events.extend(events)
        if self._receiver is not None and self._events:
            task, self._receiver = self._receiver, None
            trio.lowlevel.reschedule(task, outcome.Value(None))

    def finish(self) -> None:
        """Mark the end of the stream: the receiver gets ``EndOfChannel`` after the buffer."""
        self._done = True
        if self._receiver is not None:
            task, self._receiver = self._receiver, None
            trio.lowlevel.reschedule(task, outcome.Value(None))

    async def wait_for_room(self) -> None:
        """Wait while about ``max_buffer`` events are unread; cancel-safe, no checkpoint if room."""
        if len(self._events) < self._max or self._closed:
            return
        self._sender = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._sender = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _wake_sender(self) -> None:
        if self._sender is not None:
            task, self._sender = self._sender, None
            trio.lowlevel.reschedule(task, outcome.Value(None))
