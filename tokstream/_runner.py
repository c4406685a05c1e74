"""The trio shell around the response parser: read a stream, hand out tool calls.

:func:`start_reply` runs one task in the caller's nursery. It reads a token
stream's events (``Client.start_stream``'s channel, or an open
``Client.stream``), feeds the sans-IO :class:`~tokstream.ResponseParser`, and
sends each :class:`~tokstream.ToolCall` on :attr:`ReplyHandle.tool_calls` the
moment its closing tag arrives, so a tool can run while the model is still
writing. :meth:`ReplyHandle.result` gives the outcome: the finished reply, or
the stream's (or parser's) error, re-raised where it is awaited, never lost
in the task. :func:`open_reply` is the ``async with`` form.

The task does no I/O of its own and starts no other task. It drains what has
already arrived with ``receive_nowait`` and feeds it to the parser in one
batch of at most ``_BATCH`` tokens (one token at a time when ``on_event``
watches), then yields to trio: to wait for the next event, after a full batch
(so a fast stream cannot starve running tools), and right after a batch that
completed a tool call (so its tool starts before the rest of a burst of
already-arrived tokens is parsed). Under load, vLLM's events do arrive in
bursts: one network read can carry dozens of them. Cancellation is trio's and is never
swallowed; a channel it was given is closed when it stops, which makes the
client abort the request.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeAlias

import trio

from ._events import Done, Error, Event, Token
from ._exceptions import ProtocolError
from ._parser import ParseEvent, Reply, ResponseParser, ToolCall

__all__ = ["ReplyHandle", "StreamedReply", "open_reply", "start_reply"]

_BATCH = 256

EventSource: TypeAlias = trio.MemoryReceiveChannel[Event] | AsyncIterable[Event]
OnEvent: TypeAlias = Callable[[Token | ParseEvent | Done | Error], None]


@dataclass(frozen=True, slots=True)
class StreamedReply:
    """A finished reply: what the parser made of it, and how the stream ended.

    Attributes:
        reply: The parsed reply (reasoning, content, tool calls, segments).
        done: The stream's ``Done`` event (finish reason, every ID, usage...).
    """

    reply: Reply
    done: Done

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The reply's tool calls, in order (malformed ones included)."""
        return self.reply.tool_calls


class ReplyHandle:
    """One running reply: its tool calls as they close, and its outcome.

    Returned by :func:`start_reply` (or yielded by :func:`open_reply`).

    Attributes:
        parser: The :class:`~tokstream.ResponseParser` being fed.
        tool_calls: Receives every :class:`~tokstream.ToolCall` the moment it
            completes (malformed ones too: check ``call.status``), then closes
            when the reply ends, however it ends. Unbounded, so a slow consumer
            never stalls the stream.
    """

    def __init__(
        self,
        parser: ResponseParser,
        on_event: OnEvent | None = None,
        on_tool_call: Callable[[ToolCall], None] | None = None,
    ) -> None:
        self.parser = parser
        self._on_event = on_event
        self._on_tool_call = on_tool_call
        send, receive = trio.open_memory_channel[ToolCall](math.inf)
        self._send = send
        self.tool_calls: trio.MemoryReceiveChannel[ToolCall] = receive
        self._finished = trio.Event()
        self._reply: Reply | None = None
        self._value: StreamedReply | None = None
        self._error: BaseException | None = None
        self._retrieved = False
        self._cancelled = False
        self._tokens = 0

    @property
    def finished(self) -> bool:
        """Whether the reply has ended (successfully or not)."""
        return self._finished.is_set()

    @property
    def tokens_seen(self) -> int:
        """How many tokens the parser has consumed so far."""
        return self._tokens

    @property
    def reply(self) -> Reply | None:
        """The parsed reply once the stream ended, also after a stream error
        (then partial: an open call is ``UNTERMINATED``); else ``None``."""
        return self._reply

    async def result(self) -> StreamedReply:
        """Wait for the reply to end and return it.

        Returns:
            The :class:`StreamedReply` (parsed reply and ``Done``).

        Raises:
            TokstreamError: The stream's error (the ``Error`` event's
                ``error``), or :class:`~tokstream.ProtocolError` if the events
                ended with no ``Done`` or ``Error``. The partial reply is on
                :attr:`reply`.
            Exception: Whatever the parser (or an ``on_event`` callback) raised.
            RuntimeError: The reading task was cancelled before the end.
        """
        await self._finished.wait()
        self._retrieved = True
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value

    # -- the task -------------------------------------------------------------------------

    async def _run(self, events: EventSource) -> None:
        try:
            if isinstance(events, trio.MemoryReceiveChannel):
                async with events:
                    await self._drain(events)
            else:
                terminal: Done | Error | None = None
                async for ev in events:
                    if isinstance(ev, Token):
                        await self._feed([ev])
                    else:
                        terminal = ev
                        break
                self._end(terminal)
        except trio.Cancelled:
            self._cancelled = True
            self._fail(RuntimeError("the reply's reader task was cancelled before the end"))
            raise
        except Exception as exc:
            self._fail(exc)
        finally:
            self._send.close()
            self._finished.set()

    async def _drain(self, recv: trio.MemoryReceiveChannel[Event]) -> None:
        batch: list[Token] = []
        while True:
            try:
                ev = recv.receive_nowait()
            except trio.WouldBlock:
                if batch:
                    await self._feed(batch)
                    batch = []
                    continue
                try:
                    ev = await recv.receive()
                except trio.EndOfChannel:
                    self._end(None)
                    return
            except trio.EndOfChannel:
                await self._feed(batch)
                self._end(None)
                return
            if isinstance(ev, Token):
                batch.append(ev)
                if len(batch) >= _BATCH:
                    await self._feed(batch)
                    batch = []
                    await trio.lowlevel.checkpoint()
            else:
                await self._feed(batch)
                self._end(ev)
                return

    async def _feed(self, tokens: list[Token]) -> None:
        on_event = self._on_event
        if on_event is None:
            if tokens:
                self._tokens += len(tokens)
                if self._publish(self.parser.feed(tokens)):
                    await self._let_tools_start()
            return
        # A watcher sees each token, then what it completed: feed one at a time.
        feed = self.parser.feed
        for t in tokens:
            self._tokens += 1
            on_event(t)
            if self._publish(feed((t,))):
                await self._let_tools_start()

    async def _let_tools_start(self) -> None:
        # A burst of already-arrived tokens must not delay a tool: yield before
        # parsing on. The first checkpoint lets a channel consumer take the call
        # (and spawn its tool); by the second, a task spawned for it (by the
        # consumer or by on_tool_call) has begun running.
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()

    def _publish(self, events: list[ParseEvent]) -> bool:
        on_event, on_call = self._on_event, self._on_tool_call
        called = False
        for ev in events:
            if on_event is not None:
                on_event(ev)
            if isinstance(ev, ToolCall):
                self._send.send_nowait(ev)
                if on_call is not None:
                    on_call(ev)
                called = True
        return called

    def _end(self, terminal: Done | Error | None) -> None:
        events = self.parser.finish()
        reply = events[-1]
        assert isinstance(reply, Reply)
        self._reply = reply
        self._publish(events)
        if self._on_event is not None and terminal is not None:
            self._on_event(terminal)
        if isinstance(terminal, Done):
            self._value = StreamedReply(reply, terminal)
        elif isinstance(terminal, Error):
            self._error = terminal.error
        else:
            self._error = ProtocolError(
                "the token stream ended with no Done or Error event after "
                f"{self._tokens} tokens; the reply is incomplete (partial reply on "
                "ReplyHandle.reply)"
            )

    def _fail(self, exc: BaseException) -> None:
        if self._error is None and self._value is None:
            self._error = exc


def start_reply(
    nursery: trio.Nursery,
    events: EventSource,
    parser: ResponseParser,
    *,
    on_event: OnEvent | None = None,
    on_tool_call: Callable[[ToolCall], None] | None = None,
) -> ReplyHandle:
    """Start parsing a token stream in ``nursery``; return its handle.

    Args:
        nursery: Where the one reading task runs.
        events: The stream's events: ``Client.start_stream``'s channel (closed
            by the task when it stops, which aborts the request), or any async
            iterable of events such as an open ``Client.stream``.
        parser: A fresh :class:`~tokstream.ResponseParser` for this reply.
        on_event: Called, in the task, with each ``Token`` followed by the parse
            events it completed (deltas, calls), then the final
            :class:`~tokstream.Reply` and the stream's ``Done`` or ``Error``: a
            live view of the reply. Keep it quick; what it raises becomes the
            outcome. (With it, tokens are parsed one at a time.)
        on_tool_call: Called, in the task, with each call the moment it
            completes (as it is sent on ``tool_calls``), e.g. to start its tool
            with ``nursery.start_soon``. Either way the task then yields twice,
            so the tool begins before more already-arrived tokens are parsed.

    Returns:
        The :class:`ReplyHandle`. Always await :meth:`ReplyHandle.result`: it is
        where a stream error surfaces. Cancelling ``nursery`` stops the task
        (closing the channel, which aborts the request) and ends the handle:
        ``tool_calls`` closes and ``result()`` raises ``RuntimeError``.
    """
    handle = ReplyHandle(parser, on_event, on_tool_call)
    nursery.start_soon(handle._run, events)
    return handle


@asynccontextmanager
async def open_reply(
    events: EventSource,
    parser: ResponseParser,
    *,
    on_event: OnEvent | None = None,
    on_tool_call: Callable[[ToolCall], None] | None = None,
) -> AsyncIterator[ReplyHandle]:
    """``async with`` form of :func:`start_reply`, with its own nursery.

    Leaving the block before the reply ends cancels the reading task (and,
    for a channel, aborts the stream). If the reply failed and the block never
    awaited :meth:`ReplyHandle.result`, the error is raised on exit.

    Yields:
        The :class:`ReplyHandle`.
    """
    async with trio.open_nursery() as nursery:
        handle = start_reply(nursery, events, parser, on_event=on_event, on_tool_call=on_tool_call)
        try:
            yield handle
        finally:
            if not handle.finished:
                nursery.cancel_scope.cancel()
    if handle._error is not None and not handle._retrieved and not handle._cancelled:
        raise handle._error
