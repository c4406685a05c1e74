"""The agent turn loop: stream a reply, run its tools while it streams, continue.

:func:`run_turn` does one turn on a :class:`~tokstream.Context`:

1. begin the assistant reply and start the stream and the parser (the
   context's ``ReplyBuilder.new_parser()``: the chat format's reply table,
   started in the state the generation prompt left); each segment the parser
   closes grows the context's reply by one leaf;
2. start each tool call's async function in a nursery **the moment the call
   closes**, while generation continues;
3. collect the results in call order (not completion order);
4. close the reply with the exact streamed IDs and append one tool message per
   call;
5. return, so the next turn can start (:func:`run_agent` loops until a reply
   has no tool calls).

A tool is an ``async def`` (run in the turn's nursery) or a plain function
(run in a worker thread with ``trio.to_thread.run_sync``, so a blocking tool
never stalls the stream; cancelling the turn waits for it to return). Anything
else is refused before the request is sent. A tool that raises, a malformed
call and an unknown tool become tool-error results (the model sees the error)
and the loop goes on. A stream error is
raised from :func:`run_turn` after the running tools are cancelled, and the
half-grown reply is discarded from the context. Cancelling the turn cancels the
stream and every running tool; the reply is discarded and ``trio.Cancelled``
propagates untouched.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import trio

from .._events import Done, Error, Event, Token
from .._exceptions import InvalidRequest
from ..core.parser import ParseEvent, Reply, ToolCall, ToolFormat, ToolSpecs
from ._reply import ReplyHandle, StreamedReply, start_reply

if TYPE_CHECKING:
    from ..context import Context, Message

__all__ = ["ToolResult", "ToolStarted", "Turn", "run_agent", "run_turn"]

ToolFunction: TypeAlias = Callable[..., Any]
"""An ``async def`` taking the call's arguments as keyword arguments, or a plain function."""


class _StreamStarter(Protocol):
    def start_stream(
        self, nursery: trio.Nursery, request: object, /, **fields: Any
    ) -> trio.abc.ReceiveChannel[Event]: ...


@dataclass(frozen=True, slots=True)
class ToolStarted:
    """The turn loop started a tool's function for a closed call.

    (The parser's :class:`~tokstream.ToolCallOpened` is earlier: the call's
    opening tag. A tool starts only once its :class:`~tokstream.ToolCall` closed.)

    Attributes:
        call: The call being run.
        token_index: How many reply tokens had been parsed when it started:
            ``call.end_token``, the count through the call's closing token. The
            tool starts before any later token is parsed, even when a burst of
            tokens has already arrived.
    """

    call: ToolCall
    token_index: int


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What one tool call produced (or why it did not run or failed).

    Attributes:
        call: The call.
        content: The text appended to the context as the tool message: the
            function's return value (``str`` as is, else JSON), or an error
            message starting with ``"error: "``.
        error: ``None`` on success; else why: the exception's ``repr``, the
            call's parse problem, or an unknown tool name.
        started_at_token: Reply tokens parsed when the tool started, which is
            ``call.end_token`` (``None`` if it never ran).
        finished_at_token: Reply tokens parsed when it finished.
    """

    call: ToolCall
    content: str
    error: str | None = None
    started_at_token: int | None = None
    finished_at_token: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the tool ran and returned normally."""
        return self.error is None

    def __repr__(self) -> str:
        content = self.content if len(self.content) <= 80 else self.content[:77] + "..."
        return (
            f"ToolResult(call=<#{self.call.index} {self.call.name} {self.call.status}>, "
            f"content={content!r}, error={self.error!r}, started_at_token="
            f"{self.started_at_token}, finished_at_token={self.finished_at_token})"
        )


@dataclass(frozen=True, slots=True)
class Turn:
    """One finished turn.

    Attributes:
        reply: The parsed reply.
        done: The stream's ``Done`` event.
        tool_results: One result per tool call, in call order.
        message: The assistant message node in the context.
    """

    reply: Reply
    done: Done
    tool_results: tuple[ToolResult, ...]
    message: Message

    def __repr__(self) -> str:
        # The reply's segments, calls and message all hold the same IDs again: summarise.
        r = self.reply
        reply = (
            f"<Reply {r.token_ids.size} tokens, reasoning {len(r.reasoning)} chars, "
            f"content {len(r.content)} chars, {len(r.tool_calls)} tool calls>"
        )
        message = f"<{self.message.role} message, {len(self.message.leaves)} leaves>"
        return (
            f"Turn(reply={reply}, done={self.done!r}, tool_results={self.tool_results!r}, "
            f"message={message})"
        )


OnTurnEvent: TypeAlias = Callable[
    [Token | ParseEvent | Done | Error | ToolStarted | ToolResult], None
]


def _as_content(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _is_async(fn: ToolFunction) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object whose __call__ is async
    )


async def _run_tool(
    call: ToolCall,
    fn: ToolFunction | None,
    handle: ReplyHandle,
    slot: int,
    results: list[ToolResult | None],
    on_event: OnTurnEvent | None,
) -> None:
    if not call.ok:
        results[slot] = ToolResult(
            call, f"error: malformed tool call ({call.status}): {call.error}", call.error
        )
    elif fn is None:
        msg = f"unknown tool {call.name!r}"
        results[slot] = ToolResult(call, f"error: {msg}", msg)
    else:
        start = call.end_token
        if on_event is not None:
            on_event(ToolStarted(call, start))
        try:
            if _is_async(fn):
                value = await fn(**(call.arguments or {}))
            else:
                value = await trio.to_thread.run_sync(
                    functools.partial(fn, **(call.arguments or {}))
                )
                if inspect.isawaitable(value):  # a plain function that returned a coroutine
                    value = await value
        except Exception as exc:
            results[slot] = ToolResult(
                call, f"error: {exc!r}", repr(exc), start, handle.tokens_seen
            )
        else:
            results[slot] = ToolResult(call, _as_content(value), None, start, handle.tokens_seen)
    if on_event is not None:
        result = results[slot]
        assert result is not None
        on_event(result)


async def run_turn(
    client: _StreamStarter,
    context: Context,
    *,
    tools: Mapping[str, ToolFunction],
    tool_specs: ToolSpecs | None = None,
    tool_format: ToolFormat | None = None,
    thinking: bool | None = None,
    on_event: OnTurnEvent | None = None,
    **sampling: Any,
) -> Turn:
    """Run one assistant turn with concurrent tool execution.

    Args:
        client: A :class:`~tokstream.Client` (anything with ``start_stream``).
        context: The conversation; its reply and the tool results are appended.
        tools: Tool name -> function taking the call's arguments as keyword
            arguments: an ``async def`` (run in the turn's nursery) or a plain
            function (run in a worker thread). The return value becomes the
            tool message (``str`` as is, else JSON).
        tool_specs: Tool definitions for the parser (types for Qwen3-Coder
            values, unknown-name detection). Default: the names in ``tools``.
        tool_format: The tool-call convention, if the chat format has several
            (Qwen: ``"hermes"``, the default, or ``"qwen3_coder"``).
        thinking: The generation prompt's thinking switch, passed to
            ``context.begin_assistant`` (Qwen3: ``False`` renders an empty
            think block). The parser starts inside a thinking block exactly
            when the prompt (generation prompt, or a prefill on an already open
            reply) left one open.
        on_event: Called, in order, with each ``Token`` and the parse events
            it completed, the stream's ``Done``/``Error``, :class:`ToolStarted`
            and each :class:`ToolResult`: a live view of the turn. What it
            raises is a bug: it propagates out of the turn (as the nursery's
            ``ExceptionGroup``) and the reply is discarded.
        **sampling: Request fields for ``client.start_stream`` (``max_tokens``,
            ``temperature``, ``extra_body``, ...). ``session_id`` defaults to
            ``context.session_id``, so every turn of a conversation reaches the
            same replica behind vllm-router.

    Returns:
        The :class:`Turn`.

    Raises:
        TokstreamError: The stream failed (running tools are cancelled first,
            and the reply is discarded from the context).
        InvalidRequest: Bad request fields or ``tool_format``, or a tool that
            is not callable, before any I/O.
        ExceptionGroup: A bug in ``on_event`` or the parser, from the turn's
            nursery (the reply is discarded).
    """
    for name, fn in tools.items():
        if not callable(fn):
            raise InvalidRequest(
                "tools", name, f"must be a function (async def, or plain), not {type(fn).__name__}"
            )
    specs: ToolSpecs = tool_specs if tool_specs is not None else {name: {} for name in tools}
    builder = context.current_reply or context.begin_assistant(thinking=thinking)
    results: list[ToolResult | None] = []
    failure: Exception | None = None
    streamed: StreamedReply | None = None
    closed = False
    try:
        parser = builder.new_parser(tool_format=tool_format, tools=specs)
        async with trio.open_nursery() as nursery:
            sampling.setdefault("session_id", context.session_id)
            events = client.start_stream(nursery, context.prompt_ids(), **sampling)
            handle: ReplyHandle | None = None

            def dispatch(call: ToolCall) -> None:
                # Runs in the reader task right after the call's closing token;
                # the reader yields before parsing on, so the tool starts first.
                assert handle is not None
                results.append(None)
                fn = tools.get(call.name) if call.name is not None else None
                nursery.start_soon(_run_tool, call, fn, handle, len(results) - 1, results, on_event)

            handle = start_reply(
                nursery, events, parser, builder=builder, on_event=on_event, on_tool_call=dispatch
            )
            try:
                streamed = await handle.result()
            except Exception as exc:
                failure = exc
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        assert streamed is not None
        message = builder.finish(streamed.done)
        closed = True
    finally:
        if not closed and builder.is_open:
            builder.discard()
    done_results = tuple(r for r in results if r is not None)
    assert len(done_results) == len(results)
    for r in done_results:
        context.add_tool(r.content, name=r.call.name, call_id=r.call.call_id)
    return Turn(streamed.reply, streamed.done, done_results, message)


async def run_agent(
    client: _StreamStarter,
    context: Context,
    *,
    tools: Mapping[str, ToolFunction],
    max_turns: int = 8,
    **options: Any,
) -> list[Turn]:
    """Run turns until a reply makes no tool call (or ``max_turns`` is reached).

    Args:
        client: A :class:`~tokstream.Client`.
        context: The conversation, ending with the user's message.
        tools: As in :func:`run_turn`.
        max_turns: The most turns to run.
        **options: Passed to every :func:`run_turn` (``tool_specs``,
            ``tool_format``, ``on_event``, sampling fields...).

    Returns:
        The turns, in order.

    Raises:
        TokstreamError: A stream failed (earlier turns stay in the context).
    """
    turns: list[Turn] = []
    for _ in range(max_turns):
        turn = await run_turn(client, context, tools=tools, **options)
        turns.append(turn)
        if not turn.reply.tool_calls:
            break
    return turns
