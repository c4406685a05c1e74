"""The trio shell: ReplyHandle / start_reply / open_reply, and the turn loop."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
from trio.testing import MockClock

import tokstream
from tokstream import Done, Error, Event, InBandError, ProtocolError, Token
from tokstream._tokenizer import Tokenizer
from tokstream._trio._reply import ReplyHandle, ToolCallChannel, open_reply, start_reply
from tokstream._trio._turns import ToolResult, ToolStarted, run_agent, run_turn
from tokstream.context import Context
from tokstream.core.parser import ReplySegment, ResponseParser, ToolCall, ToolCallStatus
from tokstream.testing import ReplayServer

from .families import load_family
from .parser_helpers import recorded_events


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.load(tiny_model_dir)


def hermes(name: str, args: object) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


def done_for(ids: list[int]) -> Done:
    return Done("stop", None, np.array(ids, dtype=np.int32))


class FakeClient:
    """Streams scripted replies as Token events, one every ``delay`` seconds.

    It stands in for ``tokstream.Client.start_stream`` (same contract: Token
    events, then exactly one Done or Error, then the channel closes) and logs
    what happens, so tests can assert on the order of events.
    """

    def __init__(self, replies: list[list[int]], *, delay: float = 0.01) -> None:
        self.replies = list(replies)
        self.delay = delay
        self.prompts: list[list[int]] = []
        self.fields: list[dict[str, Any]] = []
        self.log: list[str] = []
        self.fail_after: int | None = None
        self.burst = False  # send everything at once, as after a stalled read

    def start_stream(
        self, nursery: trio.Nursery, request: object, /, **fields: Any
    ) -> trio.MemoryReceiveChannel[Event]:
        self.prompts.append(np.asarray(request).tolist())
        self.fields.append(fields)
        if self.burst:
            ids = self.replies.pop(0)
            return scripted_channel([*(Token(i) for i in ids), done_for(ids)])
        send, receive = trio.open_memory_channel[Event](0)
        nursery.start_soon(self._produce, send, self.replies.pop(0))
        return receive

    async def _produce(self, send: trio.MemorySendChannel[Event], ids: list[int]) -> None:
        async with send:
            try:
                for k, i in enumerate(ids):
                    if self.fail_after is not None and k == self.fail_after:
                        err = InBandError(
                            "boom", server_message="boom", type="InternalServerError", code=500
                        )
                        await send.send(Error(err, np.array(ids[:k], dtype=np.int32)))
                        self.log.append("error")
                        return
                    await trio.sleep(self.delay)
                    await send.send(Token(i))
                    self.log.append(f"token {k}")
                await send.send(done_for(ids))
                self.log.append("done")
            except trio.BrokenResourceError:
                self.log.append("stream closed by reader")
            except trio.Cancelled:
                self.log.append("stream cancelled")
                raise


def scripted_channel(events: list[Event]) -> trio.MemoryReceiveChannel[Event]:
    send, receive = trio.open_memory_channel[Event](len(events) + 1)
    for ev in events:
        send.send_nowait(ev)
    send.close()
    return receive


# -- ReplyHandle ----------------------------------------------------------------------------------


async def test_recorded_stream_through_start_reply(tok: Tokenizer) -> None:
    events = recorded_events("forced_hermes.sse")
    parser = ResponseParser(tok)
    async with trio.open_nursery() as nursery:
        handle = start_reply(nursery, scripted_channel(events), parser)
        calls = [call async for call in handle.tool_calls]
        result = await handle.result()
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert result.tool_calls == tuple(calls)
    assert isinstance(events[-1], Done)
    assert result.done is events[-1]
    assert result.reply.token_ids.tolist() == events[-1].token_ids.tolist()
    assert handle.tokens_seen == len(events) - 1


async def test_tool_call_arrives_before_the_stream_ends(
    autojump_clock: MockClock, tok: Tokenizer
) -> None:
    ids = tok.encode("Hi " + hermes("a", {}) + " more text after the call<|im_end|>").tolist()
    client = FakeClient([ids])
    async with trio.open_nursery() as nursery:
        chan = client.start_stream(nursery, [1])
        handle = start_reply(nursery, chan, ResponseParser(tok))
        async for call in handle.tool_calls:
            client.log.append(f"call {call.name}")
        await handle.result()
    close_index = ids.index(151658)
    got = client.log.index("call a")
    assert client.log[got - 1] == f"token {close_index}"
    assert client.log.index("done") > got


async def test_real_client_over_loopback(
    autojump_clock: MockClock, tok: Tokenizer, replay_server: ReplayServer
) -> None:
    # The lead's Client against a loopback server replaying forced_hermes with
    # 10 ms between events: the call closes 1 token before the end.
    seen: list[str] = []
    url = replay_server.url("slow=forced_hermes")
    async with tokstream.Client(url, model="tiny-qwen") as client, trio.open_nursery() as n:
        chan = client.start_stream(n, [1, 2, 3], max_tokens=64)

        def log(ev: object) -> None:
            seen.append(type(ev).__name__)

        handle = start_reply(n, chan, ResponseParser(tok), on_event=log)
        async for call in handle.tool_calls:
            seen.append(f"got {call.name}")
        result = await handle.result()
    assert result.tool_calls[0].arguments == {"city": "Paris"}
    assert seen.index("got get_weather") < seen.index("Done")
    assert seen[-2:] == ["Reply", "Done"]


async def test_on_event_sees_each_token_then_what_it_completed(tok: Tokenizer) -> None:
    events = recorded_events("forced_hermes.sse")
    seen: list[object] = []
    async with open_reply(scripted_channel(events), ResponseParser(tok), on_event=seen.append) as h:
        await h.result()
    tokens = [e for e in seen if isinstance(e, Token)]
    assert [t.id for t in tokens] == [e.id for e in events if isinstance(e, Token)]
    call = next(k for k, e in enumerate(seen) if isinstance(e, ToolCall))
    # The closing token, then what it completed: the call's segment, the call.
    segment, closing = seen[call - 1], seen[call - 2]
    assert isinstance(closing, Token) and closing.id == 151658
    assert isinstance(segment, ReplySegment) and segment.kind == "tool_call"
    assert segment.ids[-1] == 151658 and segment.tool_call == 0
    assert isinstance(seen[-1], Done) and type(seen[-2]).__name__ == "Reply"


async def test_buffered_burst_is_parsed_in_bounded_batches(tok: Tokenizer) -> None:
    # 600 tokens already buffered: the reader yields to other tasks between
    # batches, so a tool task can run before the whole burst is parsed.
    head = tok.encode(hermes("a", {})).tolist()
    ids = head + [9707] * (600 - len(head))
    events: list[Event] = [*(Token(i) for i in ids), done_for(ids)]
    observed: set[int] = set()

    async def observer() -> None:
        while not handle.finished:
            observed.add(handle.tokens_seen)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        handle = start_reply(nursery, scripted_channel(events), ResponseParser(tok))
        nursery.start_soon(observer)
        calls = [c async for c in handle.tool_calls]
        await handle.result()
    assert calls[0].name == "a"
    assert observed & {256, 512}


async def test_tool_starts_mid_burst_before_the_reply_ends(tok: Tokenizer) -> None:
    # Everything (tokens and Done) has already arrived, as after a stalled read,
    # and nothing watches on_event: the reader still stops parsing at the call's
    # closing token, and the task spawned for the call runs right then.
    ids = tok.encode(hermes("a", {}) + " tail" * 100).tolist()
    events: list[Event] = [*(Token(i) for i in ids), done_for(ids)]
    seen: list[tuple[bool, int]] = []
    closed: list[ToolCall] = []

    async with trio.open_nursery() as nursery:

        async def tool() -> None:
            seen.append((handle.finished, handle.tokens_seen))

        def dispatch(call: ToolCall) -> None:
            closed.append(call)
            nursery.start_soon(tool)

        handle = start_reply(
            nursery, scripted_channel(events), ResponseParser(tok), on_tool_call=dispatch
        )
        await handle.result()
    [call] = closed
    assert call.end_token == ids.index(151658) + 1 < len(ids)
    assert seen == [(False, call.end_token)]
    assert handle.tokens_seen == len(ids)


async def test_tool_spawned_by_a_channel_consumer_starts_at_the_closing_token(
    tok: Tokenizer,
) -> None:
    # The nursery form: a consumer of tool_calls spawns each tool. Two calls in
    # one already-arrived burst; each tool starts before the tokens after its
    # own closing tag are parsed.
    ids = tok.encode(hermes("a", {}) + " mid" * 40 + hermes("b", {}) + " tail" * 40).tolist()
    events: list[Event] = [*(Token(i) for i in ids), done_for(ids)]
    seen: list[tuple[str | None, int]] = []

    async def tool(name: str | None) -> None:
        seen.append((name, handle.tokens_seen))

    async with trio.open_nursery() as nursery:
        handle = start_reply(nursery, scripted_channel(events), ResponseParser(tok))
        async for call in handle.tool_calls:
            nursery.start_soon(tool, call.name)
        result = await handle.result()
    ends = [k + 1 for k, i in enumerate(ids) if i == 151658]
    assert [c.end_token for c in result.tool_calls] == ends
    assert seen == [("a", ends[0]), ("b", ends[1])]


async def test_turn_tool_starts_at_its_closing_token_in_a_burst_without_on_event(
    autojump_clock: MockClock,
    tok: Tokenizer,
) -> None:
    ids = tok.encode("Hi " + hermes("a", {}) + " then more text" * 5 + "<|im_end|>").tolist()
    client = FakeClient([ids], delay=0)
    client.burst = True
    ctx = new_context(tok)
    in_context: list[int] = []

    async def a() -> str:
        # The reply grows in the context leaf by leaf as it is parsed.
        in_context.append(len(ctx))
        return "ok"

    turn = await run_turn(client, ctx, tools={"a": a})
    close = ids.index(151658) + 1
    [result] = turn.tool_results
    assert result.call.end_token == close < len(ids)
    assert result.started_at_token == close
    # When the tool ran, the reply's leaves ended with the call: nothing after
    # its closing tag had been parsed yet.
    assert in_context == [len(client.prompts[0]) + close]


async def test_turn_tool_starts_at_its_closing_token_even_in_a_burst(
    autojump_clock: MockClock, tok: Tokenizer
) -> None:
    ids = tok.encode("Hi " + hermes("a", {}) + " then more text" * 5 + "<|im_end|>").tolist()
    client = FakeClient([ids], delay=0)
    client.burst = True
    seen: list[object] = []

    async def a() -> str:
        return "ok"

    turn = await run_turn(client, new_context(tok), tools={"a": a}, on_event=seen.append)
    [started] = [e for e in seen if isinstance(e, ToolStarted)]
    assert started.token_index == ids.index(151658) + 1
    assert turn.tool_results[0].started_at_token == started.token_index
    assert seen.index(started) < next(k for k, e in enumerate(seen) if isinstance(e, Done))


async def test_stream_error_surfaces_through_result(tok: Tokenizer) -> None:
    ids = tok.encode("x" + hermes("a", {}) + '<tool_call>{"name": "b"').tolist()
    err = InBandError("boom", server_message="boom")
    events: list[Event] = [*(Token(i) for i in ids), Error(err)]
    calls: list[ToolCall] = []
    async with trio.open_nursery() as nursery:
        handle = start_reply(nursery, scripted_channel(events), ResponseParser(tok))
        with pytest.raises(InBandError) as from_iteration:
            async for c in handle.tool_calls:
                calls.append(c)
        with pytest.raises(InBandError) as info:
            await handle.result()
    assert info.value is err and from_iteration.value is err
    assert [c.status for c in calls] == [ToolCallStatus.OK, ToolCallStatus.UNTERMINATED]
    assert handle.reply is not None and handle.reply.token_ids.tolist() == ids


async def test_iterating_only_the_calls_cannot_lose_a_stream_error(tok: Tokenizer) -> None:
    # A caller who only iterates tool_calls, and never awaits result(), still
    # gets the stream's error: the iteration raises it instead of just ending.
    ids = tok.encode(hermes("a", {}) + " partial").tolist()
    err = InBandError("boom", server_message="boom")
    got: list[str | None] = []
    events: list[Event] = [*(Token(i) for i in ids), Error(err)]
    async with trio.open_nursery() as nursery:
        handle = start_reply(nursery, scripted_channel(events), ResponseParser(tok))
        with pytest.raises(InBandError) as info:
            async for call in handle.tool_calls:
                got.append(call.name)
    assert info.value is err
    assert got == ["a"]
    # Events that end with no Done or Error: a ProtocolError, the same way.
    async with trio.open_nursery() as nursery:
        handle = start_reply(nursery, scripted_channel([Token(9707)]), ResponseParser(tok))
        with pytest.raises(trio.WouldBlock):
            handle.tool_calls.receive_nowait()  # the reader has not run yet
        with pytest.raises(ProtocolError):
            async for _ in handle.tool_calls:
                pass
    with pytest.raises(ProtocolError):
        handle.tool_calls.receive_nowait()
    # A reply that ends with Done: the iteration just ends.
    ok = tok.encode(hermes("a", {})).tolist()
    async with trio.open_nursery() as nursery:
        handle = start_reply(
            nursery, scripted_channel([*(Token(i) for i in ok), done_for(ok)]), ResponseParser(tok)
        )
        assert [c.name async for c in handle.tool_calls] == ["a"]
    with pytest.raises(trio.EndOfChannel):
        handle.tool_calls.receive_nowait()


async def test_events_ending_without_terminal_are_a_protocol_error(tok: Tokenizer) -> None:
    async with trio.open_nursery() as nursery:
        handle = start_reply(nursery, scripted_channel([Token(9707)]), ResponseParser(tok))
        with pytest.raises(ProtocolError, match="no Done or Error"):
            await handle.result()
    assert handle.reply is not None and handle.reply.content == "Hello"


async def test_callback_error_reaches_the_nursery(tok: Tokenizer) -> None:
    # A callback that raises is a bug: it propagates out of the reader task
    # into the nursery (not parked in the handle, where the nursery form could
    # lose it), and the handle ends with a RuntimeError caused by it.
    def bad(ev: object) -> None:
        if isinstance(ev, ToolCall):
            raise ValueError("callback broke")  # noqa: TRY004  # noqa: TRY004

    ids = tok.encode(hermes("a", {}) + " tail").tolist()
    events: list[Event] = [*(Token(i) for i in ids), done_for(ids)]
    for hook in ("on_event", "on_tool_call"):
        with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="callback broke")):
            async with trio.open_nursery() as nursery:
                handle = start_reply(
                    nursery, scripted_channel(events), ResponseParser(tok), **{hook: bad}
                )
                await trio.sleep_forever()  # the crash cancels the nursery
        with pytest.raises(RuntimeError, match="crashed") as info:
            await handle.result()
        assert isinstance(info.value.__cause__, ValueError)
        got = []
        with pytest.raises(RuntimeError, match="crashed"):
            while True:  # the calls that closed, then the crash
                got.append(handle.tool_calls.receive_nowait().name)
        assert got == ([] if hook == "on_event" else ["a"])
    # The async-with form raises it too, even when nothing awaited result().
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="callback broke")):
        async with open_reply(scripted_channel(events), ResponseParser(tok), on_event=bad):
            await trio.sleep_forever()


async def test_a_stream_error_is_still_a_value(tok: Tokenizer) -> None:
    # An Error event is not a bug: the reader task ends normally (the nursery
    # does not see it) and the handle holds it for result() and tool_calls.
    err = InBandError("boom", server_message="boom")
    seen: list[object] = []
    async with trio.open_nursery() as nursery:
        handle = start_reply(
            nursery,
            scripted_channel([Token(9707), Error(err)]),
            ResponseParser(tok),
            on_event=seen.append,
        )
        await trio.testing.wait_all_tasks_blocked()
        assert handle.finished and not nursery.cancel_scope.cancel_called
    with pytest.raises(InBandError) as info:
        await handle.result()
    assert info.value is err and isinstance(seen[-1], Error)
    with pytest.raises(InBandError):
        handle.tool_calls.receive_nowait()


def test_handles_have_no_public_constructor(tok: Tokenizer) -> None:
    with pytest.raises(TypeError, match="no public constructor"):
        ReplyHandle(ResponseParser(tok), None, None, None)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="no public constructor"):
        ToolCallChannel()


async def test_async_iterable_source(tok: Tokenizer) -> None:
    ids = tok.encode(hermes("a", {"x": 1})).tolist()

    async def source() -> AsyncIterator[Event]:
        for i in ids:
            yield Token(i)
        yield done_for(ids)

    async with open_reply(source(), ResponseParser(tok)) as handle:
        calls = [c async for c in handle.tool_calls]
        result = await handle.result()
    assert calls[0].arguments == {"x": 1} and result.done.token_ids.tolist() == ids


async def test_open_reply_exit_early_aborts_the_stream(
    autojump_clock: MockClock, tok: Tokenizer
) -> None:
    ids = tok.encode("word " * 50).tolist()
    client = FakeClient([ids])
    async with trio.open_nursery() as nursery:
        chan = client.start_stream(nursery, [1])
        async with open_reply(chan, ResponseParser(tok)) as handle:
            await trio.sleep(0.1)
        assert handle.finished
        await trio.testing.wait_all_tasks_blocked()
    assert "done" not in client.log
    assert client.log[-1] == "stream closed by reader"


async def test_closing_tool_calls_drops_later_calls_not_the_reply(tok: Tokenizer) -> None:
    ids = tok.encode(hermes("a", {}) + hermes("b", {})).tolist()
    async with open_reply(
        scripted_channel([*(Token(i) for i in ids), done_for(ids)]), ResponseParser(tok)
    ) as handle:
        first = await handle.tool_calls.receive()
        await handle.tool_calls.aclose()
        result = await handle.result()
    assert first.name == "a"
    assert [c.name for c in result.tool_calls] == ["a", "b"]


async def test_open_reply_raises_unretrieved_error_on_exit(tok: Tokenizer) -> None:
    err = InBandError("boom", server_message="boom")
    with pytest.raises(InBandError) as info:
        async with open_reply(scripted_channel([Error(err)]), ResponseParser(tok)) as handle:
            await trio.testing.wait_all_tasks_blocked()
            assert handle.finished
    assert info.value is err


async def test_async_generator_source_is_closed_when_the_reader_stops(tok: Tokenizer) -> None:
    ids = tok.encode(hermes("a", {}) + " tail").tolist()
    log: list[str] = []

    async def source(then: Event | None) -> AsyncIterator[Event]:
        try:
            for i in ids:
                yield Token(i)
            if then is not None:
                yield then
            yield Token(9707)  # never read: the reader stops at the terminal event
            log.append("ran past the end")
        finally:
            log.append("closed")

    # The reader stops at Done while the generator is suspended after it.
    gen = source(done_for(ids))
    async with trio.open_nursery() as nursery:
        handle = start_reply(nursery, gen, ResponseParser(tok))
        await handle.result()
        assert log == ["closed"]
    # Cancelled while the generator is suspended (the reader yields after a call).
    gen = source(None)
    async with trio.open_nursery() as nursery:
        handle = start_reply(
            nursery, gen, ResponseParser(tok), on_tool_call=lambda c: nursery.cancel_scope.cancel()
        )
    assert log == ["closed", "closed"]
    with pytest.raises(RuntimeError, match="cancelled"):
        await handle.result()


# -- the turn loop ----------------------------------------------------------------------------


def new_context(tok: Tokenizer) -> Context:
    ctx = Context(tok)
    ctx.add_user("Weather in Paris and Tokyo?")
    return ctx


async def test_turn_runs_tools_while_generating_and_collects_in_order(
    autojump_clock: MockClock, tok: Tokenizer
) -> None:
    first = tok.encode(
        "<think>\nTwo cities.\n</think>\n\n"
        + hermes("get_weather", {"city": "Paris"})
        + "\n"
        + hermes("slow_weather", {"city": "Tokyo"})
        + "<|im_end|>"
    ).tolist()
    second = tok.encode("Paris 21C, Tokyo 18C.<|im_end|>").tolist()
    client = FakeClient([first, second])
    log = client.log

    async def get_weather(city: str) -> dict[str, Any]:
        log.append(f"start get_weather {city}")
        await trio.sleep(0.001)
        log.append("end get_weather")
        return {"city": city, "temp_c": 21}

    async def slow_weather(city: str) -> str:
        log.append(f"start slow_weather {city}")
        await trio.sleep(5)
        log.append("end slow_weather")
        return f"{city}: 18C"

    seen: list[object] = []
    ctx = new_context(tok)
    turns = await run_agent(
        client,
        ctx,
        tools={"get_weather": get_weather, "slow_weather": slow_weather},
        on_event=seen.append,
        max_tokens=128,
    )
    assert len(turns) == 2
    turn = turns[0]
    # Tool 1 started while the model was still writing tool 2; tool 2 (slow)
    # finished long after the stream's Done.
    assert log.index("start get_weather Paris") < log.index("done")
    assert log.index("end get_weather") < log.index("done")
    assert log.index("done") < log.index("end slow_weather")
    # Results in call order, not completion order.
    assert [r.call.name for r in turn.tool_results] == ["get_weather", "slow_weather"]
    assert [r.content for r in turn.tool_results] == [
        '{"city": "Paris", "temp_c": 21}',
        "Tokyo: 18C",
    ]
    r0 = turn.tool_results[0]
    assert r0.started_at_token is not None and r0.started_at_token < len(first)
    # Event order seen by the callback: call 0, its start, ..., Done, results.
    kinds = [type(e).__name__ for e in seen]
    assert kinds.index("ToolStarted") < kinds.index("Done")
    started = [e for e in seen if isinstance(e, ToolStarted)]
    assert [s.call.name for s in started] == ["get_weather", "slow_weather"]
    # The context holds the exact streamed IDs, then the tool results, then turn 2.
    assert ctx.prompt_ids()[ctx.generation_mask()].tolist() == first + second
    roles = [m.role for m in ctx.messages]
    assert roles == ["user", "assistant", "tool", "tool", "assistant"]
    # The second request's prompt was the context after turn 1.
    assert client.prompts[1] == ctx.prompt_ids()[: len(client.prompts[1])].tolist()
    assert first == client.prompts[1][len(client.prompts[0]) : len(client.prompts[0]) + len(first)]
    assert turns[1].reply.content == "Paris 21C, Tokyo 18C."
    assert client.fields[0] == {"max_tokens": 128, "session_id": ctx.session_id}


async def test_tool_errors_become_results(autojump_clock: MockClock, tok: Tokenizer) -> None:
    ids = tok.encode(
        hermes("explode", {})
        + hermes("missing", {})
        + '<tool_call>\n{"name": "explode", bad}\n</tool_call>'
        + "<|im_end|>"
    ).tolist()
    client = FakeClient([ids])

    async def explode() -> str:
        raise KeyError("nope")

    ctx = new_context(tok)
    turn = await run_turn(client, ctx, tools={"explode": explode})
    results = turn.tool_results
    assert [r.ok for r in results] == [False, False, False]
    assert results[0].content == "error: KeyError('nope')"
    assert results[0].started_at_token is not None
    assert "unknown tool" in results[1].content
    assert results[2].call.status is ToolCallStatus.INVALID_JSON
    assert results[2].content.startswith("error: malformed tool call (invalid_json)")
    assert [m.role for m in ctx.messages][-3:] == ["tool", "tool", "tool"]


async def test_cancelling_the_turn_cancels_stream_and_tools(
    autojump_clock: MockClock, tok: Tokenizer
) -> None:
    ids = tok.encode(hermes("hang", {}) + " and a long tail " * 20).tolist()
    client = FakeClient([ids])
    log = client.log

    async def hang() -> str:
        log.append("tool start")
        try:
            await trio.sleep_forever()
        finally:
            log.append("tool cancelled")
        return "never"

    ctx = new_context(tok)
    before = len(ctx)
    with trio.move_on_after(0.5) as scope:
        await run_turn(client, ctx, tools={"hang": hang})
    assert scope.cancelled_caught
    assert "tool start" in log and "tool cancelled" in log
    assert "done" not in log and "stream cancelled" in log
    assert len(ctx) == before and ctx.current_reply is None
    assert [m.role for m in ctx.messages] == ["user"]


async def test_stream_error_cancels_tools_and_raises(
    autojump_clock: MockClock, tok: Tokenizer
) -> None:
    ids = tok.encode(hermes("hang", {}) + " tail tail tail tail").tolist()
    client = FakeClient([ids])
    client.fail_after = len(ids) - 2
    cancelled: list[bool] = []

    async def hang() -> str:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(True)
            raise
        return "never"

    ctx = new_context(tok)
    before = len(ctx)
    with pytest.raises(InBandError, match="boom"):
        await run_turn(client, ctx, tools={"hang": hang})
    assert cancelled == [True]
    assert len(ctx) == before and ctx.current_reply is None


def test_tool_result_and_started_are_frozen_nouns(tok: Tokenizer) -> None:
    call = ToolCall(0, "f", {}, ToolCallStatus.OK, "", np.zeros(0, dtype=np.int32))
    r = ToolResult(call, "x")
    with pytest.raises(AttributeError):
        r.content = "y"  # type: ignore[misc]
    assert r.ok and not ToolResult(call, "e", "why").ok
    assert ToolStarted(call, 3).token_index == 3


async def test_turn_parser_starts_where_the_generation_prompt_left_off(
    autojump_clock: MockClock, tok: Tokenizer
) -> None:
    # One thinking switch: run_turn's parser follows the prompt the chat format
    # rendered. This format opens <think> in its generation prompt unless
    # thinking=False, so the same reply is reasoning, or content.
    from .test_context_parser import _ThinkingFirst

    ids = tok.encode("plan\n</think>\n\nAnswer.<|im_end|>").tolist()
    for thinking, reasoning in ((None, "plan\n"), (False, "")):
        ctx = Context(tok, _ThinkingFirst(tok))
        ctx.add_user("q")
        turn = await run_turn(FakeClient([ids]), ctx, tools={}, thinking=thinking)
        assert turn.reply.reasoning == reasoning
        kinds = [leaf.kind for leaf in turn.message.leaves if leaf.sampled]
        assert kinds == (["thinking", "text", "stop"] if reasoning else ["text", "stop"])


async def test_turn_results_name_the_call_they_answer(vllm_home: Path) -> None:
    # Kimi K2 renders a result as "## Return of <call_id>": run_turn passes each
    # call's ID to add_tool, so a family whose results name their call works.
    kimi = load_family("kimi-k2", vllm_home)
    ctx = Context(kimi)
    ctx.add_user("Weather?")
    reply = (
        "<think>t</think><|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
        '<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|>'
        "<|tool_calls_section_end|><|im_end|>"
    )

    async def get_weather(city: str) -> str:
        return f"sunny in {city}"

    turn = await run_turn(
        FakeClient([kimi.encode(reply).tolist()]), ctx, tools={"get_weather": get_weather}
    )
    (result,) = turn.tool_results
    assert result.call.call_id == "functions.get_weather:0"
    assert ctx.messages[-1].role == "tool"
    assert ctx.messages[-1].text == (
        "<|im_system|>get_weather<|im_middle|>## Return of functions.get_weather:0\n"
        "sunny in Paris<|im_end|>"
    )


async def test_plain_function_tools_run_in_a_worker_thread(tok: Tokenizer) -> None:
    # openai-SDK users write plain functions: they run (off the trio thread, so a
    # blocking tool never stalls the stream) instead of failing with "can't await".
    ids = tok.encode(
        hermes("plain", {"city": "Paris"})
        + hermes("coro", {"city": "Oslo"})
        + hermes("returns_coroutine", {})
        + "<|im_end|>"
    ).tolist()
    threads: dict[str, bool] = {}

    def plain(city: str) -> dict[str, str]:
        threads["plain"] = threading.current_thread() is threading.main_thread()
        return {"city": city}

    async def coro(city: str) -> str:
        threads["coro"] = threading.current_thread() is threading.main_thread()
        return city

    turn = await run_turn(
        FakeClient([ids], delay=0),
        new_context(tok),
        tools={"plain": plain, "coro": coro, "returns_coroutine": functools.partial(coro, "Rome")},
    )
    assert [r.content for r in turn.tool_results] == ['{"city": "Paris"}', "Oslo", "Rome"]
    assert all(r.ok for r in turn.tool_results)
    assert threads == {"plain": False, "coro": True}


async def test_a_tool_that_is_not_a_function_is_refused_before_sending(tok: Tokenizer) -> None:
    client = FakeClient([[1]])
    ctx = new_context(tok)
    before = len(ctx)
    with pytest.raises(tokstream.InvalidRequest, match=r"'weather'.*must be a function"):
        await run_turn(client, ctx, tools={"weather": "sunny"})  # type: ignore[dict-item]
    assert client.prompts == [] and len(ctx) == before and ctx.current_reply is None


async def test_turn_done_and_error_reprs_stay_short(tok: Tokenizer) -> None:
    # A long reply's IDs appear in the reply, its segments, its calls, the Done and the
    # message: printed in full, one turn filled hundreds of lines.
    ids = tok.encode(hermes("a", {"x": "y" * 4000}) + " tail" * 3000 + "<|im_end|>").tolist()

    async def a(x: str) -> str:
        return "ok"

    turn = await run_turn(FakeClient([ids], delay=0), new_context(tok), tools={"a": a})
    text = repr(turn)
    assert "\n" not in text and len(text) < 2000, text
    assert text.startswith(f"Turn(reply=<Reply {len(ids)} tokens, ")
    assert "tool_results=(ToolResult(call=<#0 a ok>, content='ok', error=None" in text
    assert f"token_ids=<int32[{len(ids)}] {ids[0]} {ids[1]} {ids[2]} ... " in text
    done = repr(turn.done)
    assert done.startswith("Done(finish_reason='stop', ") and len(done) < 1000
    error = repr(Error(InBandError("boom", server_message="boom"), np.array(ids, np.int32)))
    assert (
        error.startswith("Error(error=InBandError('boom'), token_ids=<int32[") and len(error) < 600
    )
