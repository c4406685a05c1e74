"""The trio shell around the response parser: read a stream, hand out tool calls.

:func:`start_reply` runs one task in the caller's nursery. It reads a token
stream's events (``Client.start_stream``'s channel, or an open
``Client.stream``), pushes the tokens into the sans-IO
:class:`~tokstream.ResponseParser`, and pulls its events: each
:class:`~tokstream.ReplySegment` grows the context's open reply (``builder=``)
leaf by leaf, and each :class:`~tokstream.ToolCall` is sent on
:attr:`ReplyHandle.tool_calls` the moment its closing tag arrives, so a tool
can run while the model is still writing. :meth:`ReplyHandle.result` gives the
outcome. :func:`open_reply` is the ``async with`` form.

Failures. A stream failure (an ``Error`` event, or events that end with no
``Done``) is a value: :meth:`ReplyHandle.result` raises it where it is
awaited, and iterating :attr:`ReplyHandle.tool_calls` raises it instead of
just ending, so it is never lost in the task. A bug (an exception from the
parser, or from a caller's ``on_event`` / ``on_tool_call`` callback)
propagates out of the task into the nursery, as trio does with any task that
crashes; ``result()`` then raises ``RuntimeError`` from it.

The task does no I/O of its own and starts no other task. It drains what has
already arrived with ``receive_nowait`` into a batch of at most ``_BATCH``
tokens and hands the batch to the parser. The parser's pull API stops right
after a token that completes an event, so a call is handed out and the task
yields before the tokens after its closing tag are parsed: the call's tool
starts at its closing token even inside a burst of already-arrived tokens
(under load, one network read can carry dozens of vLLM's events). The task
also yields to wait for the next event and after a full batch (so a fast
stream cannot starve running tools). With ``on_event`` it feeds one token at a
time. Cancellation is trio's and is never swallowed. When the task stops, it
closes its source: a channel (which makes the client abort the request), or an
async iterable with ``aclose()`` such as an async generator or an open
``Client.stream``.
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
from ..context import ReplyBuilder
from ..core.parser import NEED_TOKENS, ParseEvent, Reply, ReplySegment, ResponseParser, ToolCall
from ._channel import EventChannel
from ._util import NoPublicConstructor

__all__ = ["ReplyHandle", "StreamedReply", "ToolCallChannel", "open_reply", "start_reply"]

_BATCH = 256

EventSource: TypeAlias = EventChannel | trio.MemoryReceiveChannel[Event] | AsyncIterable[Event]
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


class ToolCallChannel(trio.abc.ReceiveChannel[ToolCall], metaclass=NoPublicConstructor):
    """A reply's completed tool calls, in order, as they close (``ReplyHandle.tool_calls``).

    Iterate it with ``async for``, or call :meth:`receive`. Unbounded, so a slow
    consumer never stalls the stream. Only :func:`start_reply` creates one.

    At the end of the reply: if it ended with ``Done``, iteration stops (and
    :meth:`receive` raises ``trio.EndOfChannel``). Otherwise, after the calls
    that did complete (an open call comes out ``UNTERMINATED``), iteration
    raises what :meth:`ReplyHandle.result` raises: the stream's error, a
    :class:`~tokstream.ProtocolError`, or ``RuntimeError`` if the reading task
    was cancelled or crashed. So a caller that only iterates the calls cannot
    mistake a broken reply for a finished one.
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


class ReplyHandle(metaclass=NoPublicConstructor):
    """One running reply: its tool calls as they close, and its outcome.

    Returned by :func:`start_reply` (or yielded by :func:`open_reply`); it has
    no public constructor.

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
        builder: ReplyBuilder | None,
        on_event: OnEvent | None,
        on_tool_call: Callable[[ToolCall], None] | None,
    ) -> None:
        self.parser = parser
        self._builder = builder
        self._on_event = on_event
        self._on_tool_call = on_tool_call
        send, receive = trio.open_memory_channel[ToolCall](math.inf)
        self._send = send
        self.tool_calls = ToolCallChannel._create(self, receive)
        self._finished = trio.Event()
        self._reply: Reply | None = None
        self._value: StreamedReply | None = None
        self._error: BaseException | None = None
        self._retrieved = False
        self._cancelled = False

    @property
    def finished(self) -> bool:
        """Whether the reply has ended (successfully or not)."""
        return self._finished.is_set()

    @property
    def tokens_seen(self) -> int:
        """How many tokens the parser has consumed so far."""
        return self.parser.tokens_parsed

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
            RuntimeError: The reading task was cancelled before the end, or it
                crashed (a bug in the parser or a callback; the exception, its
                ``__cause__``, also propagated into the task's nursery).
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
            if isinstance(events, EventChannel | trio.MemoryReceiveChannel):
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
        except BaseException as exc:
            # A bug (parser, callback): it belongs to the nursery, not the handle.
            crash = RuntimeError(f"the reply's reader task crashed with {exc!r}")
            crash.__cause__ = exc
            self._fail(crash)
            raise
        finally:
            self._send.close()
            self._finished.set()

    async def _drain(self, recv: EventChannel | trio.MemoryReceiveChannel[Event]) -> None:
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
        parser = self.parser
        on_event = self._on_event
        if on_event is None:
            # A call's tool must start before the tokens after its closing tag
            # are parsed: the pull API stops there; hand the call out, yield, go on.
            parser.receive_tokens(tokens)
            await self._publish_events()
            return
        # A watcher sees each token, then what it completed: feed one at a time.
        for t in tokens:
            on_event(t)
            parser.receive_tokens((t,))
            await self._publish_events()

    async def _publish_events(self) -> None:
        next_event = self.parser.next_event
        while (ev := next_event()) is not NEED_TOKENS:
            if self._publish(ev):
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

    def _publish(self, ev: ParseEvent) -> bool:
        """Deliver one parse event; return whether it was a call (a tool may start)."""
        if isinstance(ev, ReplySegment) and self._builder is not None:
            self._builder.add_segment(ev)
        if self._on_event is not None:
            self._on_event(ev)
        if not isinstance(ev, ToolCall):
            return False
        with contextlib.suppress(trio.BrokenResourceError):
            self._send.send_nowait(ev)  # unless the caller closed tool_calls
        if self._on_tool_call is not None:
            self._on_tool_call(ev)
        return True

    def _end(self, terminal: Done | Error | None) -> None:
        parser = self.parser
        parser.end_of_reply()
        while (ev := parser.next_event()) is not NEED_TOKENS:
            self._publish(ev)
            if isinstance(ev, Reply):
                self._reply = ev
        reply = self._reply
        assert reply is not None
        if self._on_event is not None and terminal is not None:
            self._on_event(terminal)
        if isinstance(terminal, Done):
            self._value = StreamedReply(reply, terminal)
        elif isinstance(terminal, Error):
            self._error = terminal.error
        else:
            self._error = ProtocolError(
                "the token stream ended with no Done or Error event after "
                f"{parser.tokens_parsed} tokens; the reply is incomplete (partial reply on "
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
    builder: ReplyBuilder | None = None,
    on_event: OnEvent | None = None,
    on_tool_call: Callable[[ToolCall], None] | None = None,
) -> ReplyHandle:
    """Start parsing a token stream in ``nursery``; return its handle.

    Args:
        nursery: Where the one reading task runs.
        events: The stream's events: ``Client.start_stream``'s channel (closed
            by the task when it stops, which aborts the request), or any async
            iterable of events such as an open ``Client.stream``.
        parser: A fresh :class:`~tokstream.ResponseParser` for this reply
            (``builder.new_parser()`` when growing a context).
        builder: A context's open reply (``Context.begin_assistant()``) to
            grow leaf by leaf: each :class:`~tokstream.ReplySegment` is added
            the moment it closes, before the events after it are handed out.
            Close the turn yourself (``builder.finish(done)``) after the result.
        on_event: Called, in the task, with each ``Token`` followed by the parse
            events it completed (deltas, segments, calls), then the final
            :class:`~tokstream.Reply` and the stream's ``Done`` or ``Error``: a
            live view of the reply. Keep it quick. (With it, tokens are parsed
            one at a time.)
        on_tool_call: Called, in the task, with each call the moment it
            completes (as it is sent on ``tool_calls``), e.g. to start its tool
            with ``nursery.start_soon``. Either way the task then yields, so a
            tool started for the call (here or by a ``tool_calls`` consumer)
            begins before any token after the call's closing tag is parsed.

    An exception from ``on_event``, ``on_tool_call``, the builder or the
    parser is a bug: it propagates out of the task into ``nursery`` (which
    cancels the nursery's other tasks), and the handle ends with a
    ``RuntimeError`` whose ``__cause__`` is that exception.

    Returns:
        The :class:`ReplyHandle`. A stream error surfaces from
        :meth:`ReplyHandle.result` and from iterating ``tool_calls``; await
        one of them. Cancelling ``nursery`` stops the task (closing its
        source, which for a channel aborts the request) and ends the handle:
        ``tool_calls`` and ``result()`` raise ``RuntimeError``.
    """
    handle = ReplyHandle._create(parser, builder, on_event, on_tool_call)
    nursery.start_soon(handle._run, events)
    return handle


@asynccontextmanager
async def open_reply(
    events: EventSource,
    parser: ResponseParser,
    *,
    builder: ReplyBuilder | None = None,
    on_event: OnEvent | None = None,
    on_tool_call: Callable[[ToolCall], None] | None = None,
) -> AsyncIterator[ReplyHandle]:
    """``async with`` form of :func:`start_reply`, with its own nursery.

    Leaving the block before the reply ends cancels the reading task (and,
    for a channel, aborts the stream). If the stream failed and the block
    neither awaited :meth:`ReplyHandle.result` nor got the error from
    iterating ``tool_calls``, the error is raised on exit. A bug in a
    callback or the parser leaves the block as the nursery's exception
    (an ``ExceptionGroup``, as trio's nurseries raise).

    Yields:
        The :class:`ReplyHandle`.
    """
    async with trio.open_nursery() as nursery:
        handle = start_reply(
            nursery,
            events,
            parser,
            builder=builder,
            on_event=on_event,
            on_tool_call=on_tool_call,
        )
        try:
            yield handle
        finally:
            if not handle.finished:
                nursery.cancel_scope.cancel()
    if handle._error is not None and not handle._retrieved and not handle._cancelled:
        raise handle._error
