"""The trio shell around the response parser: read a stream, hand out tool calls.

:func:`start_reply` runs one task in the caller's nursery. It reads a token
stream's events (``Client.start_stream``'s channel, or an open
``Client.stream``), feeds the sans-IO :class:`~tokstream.ResponseParser`, and
sends each :class:`~tokstream.ToolCall` on :attr:`ReplyHandle.tool_calls` the
moment its closing tag arrives, so a tool can run while the model is still
writing. :meth:`ReplyHandle.result` gives the outcome: the finished reply, or
the stream's (or parser's) error, re-raised where it is awaited, never lost
in the task. :func:`open_reply` is the ``async with`` form.

Nothing is lost in the nursery form either: iterating
:attr:`ReplyHandle.tool_calls` ends normally only if the reply ended with
``Done``; otherwise the iteration raises the same error as ``result()``.

The task does no I/O of its own and starts no other task. It drains what has
already arrived with ``receive_nowait`` into a batch of at most ``_BATCH``
tokens and feeds it with ``ResponseParser.feed_until_call``, which stops right
after a token that completes a tool call. The call is then handed out and the
task yields before it parses the rest of the batch, so the call's tool starts
at its closing token even inside a burst of already-arrived tokens (under
load, one network read can carry dozens of vLLM's events). It also yields to
wait for the next event and after a full batch (so a fast stream cannot starve
running tools). With ``on_event`` it feeds one token at a time. Cancellation is
trio's and is never swallowed. When the task stops, it closes its source: a
channel (which makes the client abort the request), or an async iterable with
``aclose()`` such as an async generator or an open ``Client.stream``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

import trio

from .._events import Done, Error, Event, Token
from .._exceptions import ProtocolError
from ..core.parser import ParseEvent, Reply, ResponseParser, ToolCall

__all__ = ["ReplyHandle", "StreamedReply", "ToolCallChannel", "open_reply", "start_reply"]

_BATCH = 256

EventSource: TypeAlias = trio.MemoryReceiveChannel[Event] | AsyncIterable[Event]
OnEvent: TypeAlias = Callable[[Token | ParseEvent | Done | Error], None]


@runtime_checkable
class _Closable(Protocol):
    def aclose(self) -> Awaitable[object]: ...


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


class ToolCallChannel(trio.abc.ReceiveChannel[ToolCall]):
    """A reply's completed tool calls, in order, as they close (``ReplyHandle.tool_calls``).

    Iterate it with ``async for``, or call :meth:`receive`. Unbounded, so a slow
    consumer never stalls the stream.

    At the end of the reply: if it ended with ``Done``, iteration stops (and
    :meth:`receive` raises ``trio.EndOfChannel``). Otherwise, after the calls
    that did complete (an open call comes out ``UNTERMINATED``), iteration
    raises what :meth:`ReplyHandle.result` raises: the stream's error, a
    :class:`~tokstream.ProtocolError`, the parser's or a callback's exception,
    or ``RuntimeError`` if the reading task was cancelled. So a caller that
    only iterates the calls cannot mistake a broken reply for a finished one.
    """

    def __init__(self, handle: ReplyHandle, receive: trio.MemoryReceiveChannel[ToolCall]) -> None:
        self._handle = handle
        self._receive = receive

    async def receive(self) -> ToolCall:
        """Wait for the next completed call.

        Raises:
            trio.EndOfChannel: The reply ended with ``Done``; no more calls.
            Exception: The reply ended otherwise (see the class docstring).
        """
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            pass
        self._handle._raise_failure()  # outside the except: no EndOfChannel context
        raise trio.EndOfChannel

    def receive_nowait(self) -> ToolCall:
        """The next call if one is ready; else raise ``trio.WouldBlock``.

        Raises:
            trio.WouldBlock: No call yet, and the reply has not ended.
            trio.EndOfChannel: The reply ended with ``Done``; no more calls.
            Exception: The reply ended otherwise (see the class docstring).
        """
        try:
            return self._receive.receive_nowait()
        except trio.EndOfChannel:
            pass
        self._handle._raise_failure()
        raise trio.EndOfChannel

    def close(self) -> None:
        """Stop receiving; later calls are dropped. The reply goes on."""
        self._receive.close()

    async def aclose(self) -> None:
        """Async form of :meth:`close`."""
        self.close()
        await trio.lowlevel.checkpoint()


class ReplyHandle:
    """One running reply: its tool calls as they close, and its outcome.

    Returned by :func:`start_reply` (or yielded by :func:`open_reply`).

    Attributes:
        parser: The :class:`~tokstream.ResponseParser` being fed.
        tool_calls: Receives every :class:`~tokstream.ToolCall` the moment it
            completes (malformed ones too: check ``call.status``). It ends when
            the reply ends: normally after ``Done``, else by raising the
            reply's error (see :class:`ToolCallChannel`).
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
        self.tool_calls = ToolCallChannel(self, receive)
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
        self._raise_failure()
        assert self._value is not None
        return self._value

    def _raise_failure(self) -> None:
        if self._error is not None:
            self._retrieved = True
            raise self._error

    # -- the task -------------------------------------------------------------------------

    async def _run(self, events: EventSource) -> None:
        try:
            if isinstance(events, trio.MemoryReceiveChannel):
                async with events:
                    await self._drain(events)
            else:
                terminal: Done | Error | None = None
                # An async generator left suspended would run its cleanup only
                # when garbage-collected: close it (and any source with aclose)
                # here, on the way out, also when cancelled.
                closing = aclosing(events) if isinstance(events, _Closable) else nullcontext()
                async with closing:
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
            # A call's tool must start before the tokens after its closing tag
            # are parsed: stop there, hand the call out, yield, then go on.
            feed_some, pos, n = self.parser.feed_until_call, 0, len(tokens)
            while pos < n:
                events, end = feed_some(tokens, pos)
                self._tokens += end - pos
                pos = end
                if self._publish(events):
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
        # Trio runs every task made runnable in one scheduling batch before
        # any task made runnable during it. A task on_tool_call spawned runs in
        # the batch after ours, so it has begun by our second checkpoint. A
        # channel consumer wakes in that batch and spawns its tool for the
        # one after: by our third checkpoint, that tool has begun too.
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()

    def _publish(self, events: list[ParseEvent]) -> bool:
        on_event, on_call = self._on_event, self._on_tool_call
        called = False
        for ev in events:
            if on_event is not None:
                on_event(ev)
            if isinstance(ev, ToolCall):
                with contextlib.suppress(trio.BrokenResourceError):
                    self._send.send_nowait(ev)  # unless the caller closed tool_calls
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
            with ``nursery.start_soon``. Either way the task then yields, so a
            tool started for the call (here or by a ``tool_calls`` consumer)
            begins before any token after the call's closing tag is parsed.

    Returns:
        The :class:`ReplyHandle`. A stream error surfaces from
        :meth:`ReplyHandle.result` and from iterating ``tool_calls``; await
        one of them. Cancelling ``nursery`` stops the task (closing its
        source, which for a channel aborts the request) and ends the handle:
        ``tool_calls`` and ``result()`` raise ``RuntimeError``.
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
    for a channel, aborts the stream). If the reply failed and the block
    neither awaited :meth:`ReplyHandle.result` nor got the error from
    iterating ``tool_calls``, the error is raised on exit.

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
