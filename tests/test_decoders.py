"""The sans-IO decoders, tested synchronously on real vLLM recordings."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokstream
from tokstream import Done, Error, SSEDecoder, SSEEvent, StreamDecoder, Token
from tokstream.core._http_errors import http_status_error
from tokstream.core._wire import decode_error

DATA = Path(__file__).parent / "data"
RECORDINGS = sorted(p.stem for p in DATA.glob("*.sse"))


def chunks_of(name: str) -> list[dict[str, object]]:
    out = []
    for line in (DATA / f"{name}.sse").read_text().splitlines():
        if line.startswith("data: {"):
            out.append(json.loads(line[6:]))
    return out


def recorded_ids(name: str) -> list[int]:
    return [
        i for c in chunks_of(name) for ch in (c.get("choices") or []) for i in ch["token_ids"] or []
    ]


def recorded_text(name: str) -> str:
    return "".join(ch["text"] for c in chunks_of(name) for ch in (c.get("choices") or []))


def normalise(events: list[tokstream.Event]) -> list[tuple[object, ...]]:
    """Comparable form: tokens by (id, text, logprob); terminals by their content."""
    out: list[tuple[object, ...]] = []
    for ev in events:
        if isinstance(ev, Token):
            out.append(("T", ev.id, ev.text, ev.logprob))
        elif isinstance(ev, Done):
            prompt = None if ev.prompt_token_ids is None else ev.prompt_token_ids.tolist()
            lp = None if ev.logprobs is None else np.nan_to_num(ev.logprobs, nan=9).tolist()
            out.append(
                (
                    "D",
                    ev.finish_reason,
                    ev.stop_reason,
                    ev.token_ids.tolist(),
                    ev.text,
                    prompt,
                    ev.usage,
                    lp,
                    ev.request_id,
                    ev.diagnostics.tokens,
                    ev.diagnostics.sse_events,
                    ev.diagnostics.parse_errors,
                )
            )
        else:
            out.append(("E", type(ev.error), str(ev.error), ev.token_ids.tolist(), ev.text))
    return out


def decode(raw: bytes, pieces: list[int] | None = None) -> list[tokstream.Event]:
    decoder = StreamDecoder()
    events: list[tokstream.Event] = []
    if pieces is None:
        events += decoder.feed(raw)
    else:
        pos = 0
        for size in pieces:
            events += decoder.feed(raw[pos : pos + size])
            pos += size
        events += decoder.feed(raw[pos:])
    events += decoder.finish()
    return events


@pytest.mark.parametrize("name", RECORDINGS)
def test_whole_equals_byte_by_byte(name: str) -> None:
    raw = (DATA / f"{name}.sse").read_bytes()
    whole = normalise(decode(raw))
    assert normalise(decode(raw, [1] * len(raw))) == whole


@pytest.mark.parametrize("name", RECORDINGS)
def test_ids_and_text_match_the_recording(name: str) -> None:
    events = decode((DATA / f"{name}.sse").read_bytes())
    tokens = [e for e in events if isinstance(e, Token)]
    terminal = events[-1]
    assert isinstance(terminal, (Done, Error))
    assert sum(isinstance(e, (Done, Error)) for e in events) == 1
    if name in ("n2", "no_return_token_ids"):
        assert isinstance(terminal, Error)
        assert isinstance(terminal.error, tokstream.ProtocolError)
        return
    assert [t.id for t in tokens] == recorded_ids(name)
    assert "".join(t.text for t in tokens) == recorded_text(name)
    assert terminal.token_ids.tolist() == recorded_ids(name)
    assert terminal.text == recorded_text(name)


@settings(max_examples=60)
@given(data=st.data(), name=st.sampled_from(RECORDINGS))
def test_random_splits_give_identical_events(data: st.DataObject, name: str) -> None:
    raw = (DATA / f"{name}.sse").read_bytes()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=40)))
    pieces = [b - a for a, b in zip([0, *cuts], cuts, strict=False)]
    assert normalise(decode(raw, pieces)) == normalise(decode(raw))


def test_forced_utf8_holds_text_back_until_the_character_completes() -> None:
    events = decode((DATA / "forced_utf8.sse").read_bytes())
    tokens = [e for e in events if isinstance(e, Token)]
    assert [t.id for t in tokens[:4]] == [13048, 11162, 104, 254]
    assert [t.text for t in tokens[:4]] == ["Hi", "", "", " 🫠"]
    expected = (DATA / "forced_utf8.expected.txt").read_text().split(":", 1)[1]
    assert [t.id for t in tokens][:-1] == json.loads(expected)
    assert tokens[-1].id == 151645 and tokens[-1].text == ""


def test_stop_string_text_lags_the_ids() -> None:
    events = decode((DATA / "stop_string_tool_call_end.sse").read_bytes())
    done = events[-1]
    assert isinstance(done, Done)
    assert done.stop_reason == "</tool_call>" and done.finish_reason == "stop"
    paris = next(t for t in events if isinstance(t, Token) and t.id == 59604)
    assert paris.text == ' {"ci'
    last = events[-2]
    assert isinstance(last, Token) and last.id == 151658 and last.text == ' "Paris"}}\n'


def test_stop_token_id_is_an_int_stop_reason() -> None:
    done = decode((DATA / "stop_token_id_tool_call_end.sse").read_bytes())[-1]
    assert isinstance(done, Done)
    assert done.stop_reason == 151658 and isinstance(done.stop_reason, int)
    assert done.token_ids[-1] == 151658


def test_done_carries_prompt_echo_usage_and_logprobs() -> None:
    name = "forced_hermes_logprobs"
    events = decode((DATA / f"{name}.sse").read_bytes())
    done = events[-1]
    assert isinstance(done, Done)
    sent = json.loads((DATA / f"{name}.req.json").read_text())["prompt"]
    assert done.prompt_token_ids is not None and done.prompt_token_ids.dtype == np.int32
    assert done.prompt_token_ids.tolist() == sent
    assert done.usage == tokstream.Usage(
        len(sent), len(done.token_ids), len(sent) + len(done.token_ids)
    )
    assert done.logprobs is not None and done.logprobs.shape == done.token_ids.shape
    assert all(isinstance(e.logprob, float) for e in events if isinstance(e, Token))
    assert done.request_id is not None and done.request_id.startswith("cmpl-")
    with pytest.raises(ValueError):
        done.token_ids[0] = 1  # read-only


def test_a_709_id_chunk_gives_709_tokens_with_the_text_on_the_last() -> None:
    chunk = json.loads((DATA / "coalesced_big_chunk.TRIMMED.json").read_text())["chunk"]
    raw = b"data: " + json.dumps(chunk).encode() + b"\n\n"
    decoder = StreamDecoder()
    events = decoder.feed(raw)
    ids = chunk["choices"][0]["token_ids"]
    assert len(ids) == 709
    assert [e.id for e in events if isinstance(e, Token)] == ids
    assert all(e.text == "" for e in events[:-1] if isinstance(e, Token))
    last = events[-1]
    assert isinstance(last, Token) and last.text == chunk["choices"][0]["text"]
    # Logprobs were trimmed to 3 entries in the recording: the rest are unknown.
    assert [e.logprob is None for e in events[:4] if isinstance(e, Token)] == [
        False,
        False,
        False,
        True,
    ]


def test_merged_chunks_recording_keeps_every_id() -> None:
    events = decode((DATA / "coalesced_chunks.sse").read_bytes())
    assert [e.id for e in events if isinstance(e, Token)] == recorded_ids("coalesced_chunks")
    assert len(recorded_ids("coalesced_chunks")) == 6
    # The excerpt has no finish: the end of input is reported, tokens kept.
    assert isinstance(events[-1], Error) and events[-1].token_ids.size == 6


@pytest.mark.parametrize(
    "payload",
    [
        b'{"error": {"message": "boom", "type": "BadRequestError", "param": null, "code": 400}}',
        b'{"object": "error", "message": "boom", "type": "BadRequestError", "code": 400}',
    ],
)
def test_in_band_error_shapes(payload: bytes) -> None:
    events = StreamDecoder().feed(b"data: " + payload + b"\n\ndata: [DONE]\n\n")
    assert len(events) == 1 and isinstance(events[0], Error)
    err = events[0].error
    assert isinstance(err, tokstream.InBandError)
    assert (err.server_message, err.type, err.code) == ("boom", "BadRequestError", 400)


@pytest.mark.parametrize(
    "body",
    [
        b'{"error": {"message": "boom", "type": "BadRequest", "param": ["x", 1], "code": 400}}',
        b'{"error": {"type": "T", "code": "c"}}',
        b'{"error": "plain string"}',
        b'{"object": "error", "message": "flat", "type": "T", "param": "p", "code": 400}',
        b'{"object": "error", "type": "T", "code": 400}',
    ],
)
def test_one_error_envelope_reads_http_and_in_band_errors_alike(body: bytes) -> None:
    # One struct reads vLLM's error body wherever it appears: the same body gives
    # the same message, type, param and code as an HTTP error and inside a stream.
    url = "http://h/v1/completions"
    http = http_status_error(400, body, url=url, request_id="r")
    events = StreamDecoder(url=url, request_id="r").feed(b"data: " + body + b"\n\n")
    assert len(events) == 1 and isinstance(events[0], Error)
    in_band = events[0].error
    assert isinstance(in_band, tokstream.InBandError)
    server = decode_error(body)
    assert server is not None
    assert (in_band.type, in_band.param, in_band.code) == (http.type, http.param, http.code)
    assert (in_band.type, in_band.param, in_band.code) == server[1:]
    if server.message is not None:
        assert in_band.server_message == http.server_message == server.message
    else:  # no message at all: the stream says "", the HTTP error shows the body
        assert in_band.server_message == "" and http.server_message == body.decode()


@pytest.mark.parametrize("body", [b'{"error": 123}', b'{"object": "error", "code": [1]}'])
def test_an_error_event_that_is_no_error_envelope_is_a_protocol_error(body: bytes) -> None:
    events = StreamDecoder().feed(b"data: " + body + b"\n\n")
    assert isinstance(events[-1], Error)
    assert type(events[-1].error) is tokstream.ProtocolError
    assert "not an error object" in str(events[-1].error)
    assert decode_error(body) is None
    assert http_status_error(500, body, url="u", request_id=None).server_message == body.decode()


def test_invalid_json_ends_the_stream_and_is_counted_and_previewed() -> None:
    raw = (DATA / "basic_stream.sse").read_bytes()
    events = decode(raw[: raw.index(b"\n\n", 600) + 2] + b"data: {nope\n\n" + raw)
    err = events[-1]
    assert isinstance(err, Error) and type(err.error) is tokstream.ProtocolError
    tokens = [e.id for e in events if isinstance(e, Token)]
    assert tokens and err.token_ids.tolist() == tokens
    assert tokens == recorded_ids("basic_stream")[: len(tokens)]
    assert err.diagnostics.parse_errors == 1
    assert err.diagnostics.parse_error_previews == ("{nope",)
    assert "'{nope'" in str(err.error)


def test_wrong_shape_json_is_a_protocol_error_not_a_silent_loss() -> None:
    events = StreamDecoder().feed(b'data: {"choices": [{"token_ids": ["x"]}]}\n\n')
    assert isinstance(events[-1], Error)
    assert isinstance(events[-1].error, tokstream.ProtocolError)


def test_nothing_after_the_terminal_event() -> None:
    decoder = StreamDecoder()
    raw = (DATA / "basic_stream.sse").read_bytes()
    events = decoder.feed(raw + raw)
    assert sum(isinstance(e, Done) for e in events) == 1 and isinstance(events[-1], Done)
    assert decoder.feed(raw) == [] and decoder.finish() == []


# -- the SSE layer ----------------------------------------------------------


def sse_all(raw: bytes, step: int | None = None) -> list[SSEEvent]:
    d = SSEDecoder()
    if step is None:
        return d.feed(raw)
    out: list[SSEEvent] = []
    for i in range(0, len(raw), step):
        out += d.feed(raw[i : i + step])
    return out


@pytest.mark.parametrize("step", [None, 1, 2, 3, 7])
def test_sse_line_endings_comments_fields_and_multiline_data(step: int | None) -> None:
    raw = (
        b": keep-alive\r\n"
        b"data: one\r\n\r\n"
        b"event: note\nid: 7\ndata: a\ndata:b\ndata:  c\n\n"
        b"retry: 100\nunknown: x\ndata: two\r\rdata: three\r\n\r\n"
        b"data: \xf0\x9f\xab\xa0\n\n"
        b"data: [DONE]\n\n"
    )
    events = sse_all(raw, step)
    assert [e.data for e in events] == [
        b"one",
        b"a\nb\n c",
        b"two",
        b"three",
        "🫠".encode(),
        b"[DONE]",
    ]
    assert events[1].event == "note" and events[1].id == "7"
    assert events[0].event == "message" and events[0].id is None
    assert events[2].id == "7"  # the last event ID persists
    assert events[4].text == "🫠"


def test_sse_blank_lines_without_data_dispatch_nothing() -> None:
    d = SSEDecoder()
    assert d.feed(b"\n\n: c\n\n") == []
    assert d.lines == 4 and d.events == 0


def test_sse_oversized_event_raises_protocol_error() -> None:
    d = SSEDecoder(max_event_size=1000)
    d.feed(b"data: " + b"x" * 500)
    with pytest.raises(tokstream.ProtocolError, match="max_event_size=1000"):
        d.feed(b"x" * 600)


def test_sse_oversized_across_many_data_lines() -> None:
    d = SSEDecoder(max_event_size=1000)
    with pytest.raises(tokstream.ProtocolError):
        for _ in range(100):
            d.feed(b"data: " + b"y" * 50 + b"\n")


def test_sse_finish_reports_an_unterminated_event() -> None:
    d = SSEDecoder()
    assert d.feed(b"data: partial") == []
    assert "partial" in d.buffer_preview()
    assert d.finish() == len(b"data: partial")


# -- audit follow-ups ---------------------------------------------------------

SYNTHETIC = (
    b": hello\r\n"
    b'event: ping\ndata: {"x": 1}\n\n'
    b"data: one\r\n\r\n"
    b"id: 42\ndata: two\rdata: 2b\r\r"
    b"event: note\r\nid: 43\r\ndata: \xe4\xb8\xad\xe6\x96\x87\n\n"
    b"retry: 5\n\ndata: [DONE]\n\n"
)


def _sse_norm(events: list[SSEEvent]) -> list[tuple[bytes, str, str | None]]:
    return [(e.data, e.event, e.id) for e in events]


@settings(max_examples=200)
@given(st.lists(st.integers(0, len(SYNTHETIC)), max_size=30))
def test_sse_random_splits_of_events_ids_and_cr(cuts: list[int]) -> None:
    whole = _sse_norm(SSEDecoder().feed(SYNTHETIC))
    assert whole == [
        (b'{"x": 1}', "ping", None),
        (b"one", "message", None),
        (b"two\n2b", "message", "42"),
        ("中文".encode(), "note", "43"),
        (b"[DONE]", "message", "43"),
    ]
    d = SSEDecoder()
    got: list[SSEEvent] = []
    bounds = [0, *sorted(cuts), len(SYNTHETIC)]
    for a, b in itertools.pairwise(bounds):
        got += d.feed(SYNTHETIC[a:b])
    assert _sse_norm(got) == whole


def test_an_event_type_split_from_its_data_is_kept() -> None:
    d = SSEDecoder()
    assert d.feed(b"event: ping\n") == []
    (ev,) = d.feed(b"data: x\n\n")
    assert (ev.event, ev.data) == ("ping", b"x")


def test_oversized_event_in_one_read_is_an_error() -> None:
    d = SSEDecoder(max_event_size=100)
    with pytest.raises(tokstream.ProtocolError, match="max_event_size=100"):
        d.feed(b"data: " + b"x" * 200 + b"\n\n")


def test_oversized_event_after_whole_ones_in_one_read_keeps_their_tokens() -> None:
    raw = (DATA / "basic_stream.sse").read_bytes()
    events = raw.split(b"\n\n")
    head = b"\n\n".join(events[:4]) + b"\n\n"
    want = recorded_ids("basic_stream")[:4]
    for pieces in ([head + b"data: " + b"y" * 5000], [head, b"data: " + b"y" * 5000]):
        decoder = StreamDecoder(max_event_size=2000)
        out: list[tokstream.Event] = []
        for piece in pieces:
            out += decoder.feed(piece)
        assert [e.id for e in out if isinstance(e, Token)] == want
        assert isinstance(out[-1], Error) and isinstance(out[-1].error, tokstream.ProtocolError)
        assert out[-1].token_ids.tolist() == want


def test_done_marker_before_any_finish_reason_is_a_protocol_error() -> None:
    chunk = b'data: {"choices":[{"index":0,"text":"a","token_ids":[64]}]}\n\n'
    events = StreamDecoder().feed(chunk + b"data: [DONE]\n\n")
    assert isinstance(events[0], Token)
    assert isinstance(events[-1], Error)
    assert isinstance(events[-1].error, tokstream.ProtocolError)
    assert "[DONE] came before any finish_reason" in str(events[-1].error)


# -- cheap events, compact memory ------------------------------------------------


def test_token_is_a_cheap_frozen_value_that_pattern_matches() -> None:
    token = Token(151667, "<think>")
    match token:
        case Token(id=151667, text=text):
            assert text == "<think>"
        case _:
            raise AssertionError("keyword pattern did not match")
    match token:
        case Token(tid, text, None):
            assert (tid, text) == (151667, "<think>")
        case _:
            raise AssertionError("positional pattern did not match")
    assert Token.__match_args__ == ("id", "text", "logprob")
    assert token == Token(151667, "<think>", None) and hash(token) == hash(Token(151667, "<think>"))
    assert repr(token) == "Token(id=151667, text='<think>', logprob=None)"
    with pytest.raises(AttributeError):
        token.id = 1  # type: ignore[misc]
    assert "exactly as the server streamed it" in (Token.__doc__ or "")
    import gc

    assert not gc.is_tracked(token)  # no GC bookkeeping per token


def synthetic_stream(n_chunks: int, text: str = " tok", prompt: list[int] | None = None) -> bytes:
    head = {"id": "cmpl-1", "object": "text_completion", "model": "m"}
    out = []
    for i in range(n_chunks):
        choice: dict[str, object] = {
            "index": 0,
            "text": text,
            "token_ids": [1000 + i % 5000],
            "finish_reason": "length" if i == n_chunks - 1 else None,
            "prompt_token_ids": prompt if i == 0 else None,
        }
        out.append(b"data: " + json.dumps({**head, "choices": [choice]}).encode() + b"\n\n")
    return b"".join(out) + b"data: [DONE]\n\n"


def test_memory_kept_per_streamed_token_is_its_id_and_its_text() -> None:
    import tracemalloc

    n = 20_000
    raw = synthetic_stream(n, text=" é")  # 3 bytes of UTF-8 per token
    decoder = StreamDecoder()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(0, len(raw) - 100, 65536):
            for ev in decoder.feed(raw[i : min(i + 65536, len(raw) - 100)]):
                assert isinstance(ev, Token)
        kept = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    # The IDs (4 bytes each) and the UTF-8 text, no Python object per token.
    assert decoder.tokens > n - 100
    assert kept / decoder.tokens <= 16 + 3, kept / decoder.tokens
    done = decoder.feed(raw[len(raw) - 100 :])[-1]
    assert isinstance(done, Done)
    assert done.token_ids.tolist() == [1000 + i % 5000 for i in range(n)]
    assert done.text == " é" * n and done.token_ids.dtype == np.int32


def test_a_32k_id_prompt_echo_becomes_one_int32_array() -> None:
    import random
    import tracemalloc

    prompt = [random.randrange(0, 151_000) for _ in range(32_768)]
    raw = synthetic_stream(3, prompt=prompt)
    first_event = raw.split(b"\n\n")[0]
    decoder = StreamDecoder()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(0, len(raw), 65536):
            decoder.feed(raw[i : i + 65536])
        kept = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    done = decoder.finish() or []
    assert decoder.finished
    # What stays is the int32 array (4 bytes per ID), not a Python int per ID.
    assert kept <= 0.75 * len(first_event), (kept, len(first_event))
    events = decode(raw)
    assert isinstance(events[-1], Done) and events[-1].prompt_token_ids is not None
    assert events[-1].prompt_token_ids.tolist() == prompt
    assert events[-1].prompt_token_ids.dtype == np.int32
    assert not events[-1].prompt_token_ids.flags.writeable
    assert done == []  # it had ended at [DONE] already


@pytest.mark.parametrize(
    ("choice", "needle"),
    [
        ({"token_ids": [2**31], "text": "x"}, "outside int32"),
        ({"token_ids": [-1], "text": "x"}, "outside int32"),
        ({"token_ids": [5, -(2**31)], "text": "x"}, "outside int32"),
        ({"token_ids": [1], "text": "x", "prompt_token_ids": [-1]}, "prompt_token_ids"),
        ({"token_ids": [1], "text": "x", "prompt_token_ids": [2**40]}, "prompt_token_ids"),
        ({"token_ids": [1], "text": "x", "prompt_token_ids": [1.5]}, "prompt_token_ids"),
    ],
)
def test_ids_outside_int32_are_a_protocol_error_not_a_crash(
    choice: dict[str, object], needle: str
) -> None:
    first = {"id": "c", "choices": [{"index": 0, "text": "a", "token_ids": [7]}]}
    bad = {"id": "c", "choices": [{"index": 0, **choice}]}
    # The prompt echo comes on the first chunk (later ones are read without it).
    cases = [[bad]] if "prompt_token_ids" in choice else [[bad], [first, bad]]
    for chunks in cases:
        raw = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
        events = decode(raw)
        err = events[-1]
        assert isinstance(err, Error) and type(err.error) is tokstream.ProtocolError
        assert needle in str(err.error)


# -- issue 10: nothing lost ----------------------------------------------------------


def _chunk(ids: list[int], text: str = "x", **choice: object) -> bytes:
    body = {"id": "c", "choices": [{"index": 0, "text": text, "token_ids": ids, **choice}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _usage(prompt: int, completion: int) -> bytes:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    usage["total_tokens"] = prompt + completion
    return b"data: " + json.dumps({"id": "c", "choices": [], "usage": usage}).encode() + b"\n\n"


@pytest.mark.parametrize(
    "bad",
    [
        b'data: {"id":"c","choices":[{"index":0,"text":"y","token_ids":[9\n\n',  # cut short
        b'data: {"id":"c","choices":[{"index":0,"text":"\xc3(","token_ids":[9]}]}\n\n',
        b'data: {"id":"c","choices":[{"index":0,"text":"\\udfff","token_ids":[9]}]}\n\n',
        b'data: {"id":"c","choices":[{"index":0,"text":"y","token_ids":[9],'
        b'"logprobs":{"token_logprobs":[-Infinity]}}]}\n\n',
        b"data: 42\n\n",
    ],
)
def test_a_payload_that_may_have_carried_ids_never_ends_in_done(bad: bytes) -> None:
    raw = _chunk([7], prompt_token_ids=[1]) + bad + _chunk([8], finish_reason="stop")
    events = decode(raw + b"data: [DONE]\n\n")
    err = events[-1]
    assert isinstance(err, Error) and type(err.error) is tokstream.ProtocolError
    assert err.token_ids.tolist() == [7] and "IDs may be missing" in str(err.error)
    assert sum(isinstance(e, (Done, Error)) for e in events) == 1
    # The same, fed a byte at a time.
    assert normalise(decode(raw + b"data: [DONE]\n\n", [1] * len(raw))) == normalise(events)


def test_an_empty_data_payload_carries_nothing_and_is_skipped() -> None:
    events = decode(_chunk([7]) + b"data:\n\n" + _chunk([8], finish_reason="stop"))
    assert isinstance(events[-1], Done) and events[-1].token_ids.tolist() == [7, 8]


def test_usage_must_count_the_ids_delivered() -> None:
    ok = _chunk([7], prompt_token_ids=[1]) + _chunk([8], finish_reason="stop")
    assert isinstance(decode(ok + _usage(1, 2) + b"data: [DONE]\n\n")[-1], Done)
    for completion in (1, 3):
        err = decode(ok + _usage(1, completion) + b"data: [DONE]\n\n")[-1]
        assert isinstance(err, Error) and type(err.error) is tokstream.ProtocolError
        assert f"completion_tokens={completion}, but 2 token IDs arrived" in str(err.error)
        assert err.token_ids.tolist() == [7, 8]


def test_an_abort_finish_is_request_aborted_keeping_the_ids() -> None:
    raw = _chunk([7], prompt_token_ids=[1]) + _chunk([8], finish_reason="abort")
    for tail in (b"data: [DONE]\n\n", b""):  # with [DONE], or ended by finish()
        err = decode(raw + tail)[-1]
        assert isinstance(err, Error) and type(err.error) is tokstream.RequestAborted
        assert err.token_ids.tolist() == [7, 8] and err.text == "xx"


def test_messages_name_the_url_and_request_id() -> None:
    decoder = StreamDecoder(url="http://h/v1/completions", request_id="r-1")
    events = decoder.feed(b'data: {"error": {"message": "boom", "code": 500}}\n\n')
    assert "http://h/v1/completions (request_id=r-1)" in str(events[-1].error)  # type: ignore[union-attr]
    decoder = StreamDecoder(url="http://h/v1/completions", request_id="r-1")
    events = decoder.feed(b"data: {nope\n\n")
    assert "http://h/v1/completions (request_id=r-1)" in str(events[-1].error)  # type: ignore[union-attr]


def test_the_end_of_a_body_says_what_arrived() -> None:
    decoder = StreamDecoder(url="u")
    decoder.response_info = "HTTP 200, content-type text/html"
    decoder.feed(b"<html>hello</html>")
    err = decoder.finish()[-1]
    assert isinstance(err, Error)
    assert "not an event stream (HTTP 200, content-type text/html, 18 bytes" in str(err.error)
    assert "<html>hello</html>" in str(err.error)
    assert err.diagnostics.buffer_preview == "<html>hello</html>"  # kept past finish()
    empty = StreamDecoder(url="u").finish()[-1]
    assert isinstance(empty, Error) and "empty response" in str(empty.error)
    cut = StreamDecoder(url="u")
    cut.feed(_chunk([7]) + b"data: {")
    err = cut.finish()[-1]
    assert isinstance(err, Error) and "ended before it finished" in str(err.error)
    assert cut.ended_early and err.diagnostics.buffer_preview == "data: {"


def test_restart_splices_a_continuation_onto_the_same_stream() -> None:
    decoder = StreamDecoder()
    first = decoder.feed(_chunk([7], "a", prompt_token_ids=[1, 2]) + _chunk([8], "b"))
    assert [e.id for e in first if isinstance(e, Token)] == [7, 8]
    dropped = decoder.fail(tokstream.RemoteDisconnected("cut"))  # holds a view of the IDs
    decoder.restart()
    rest = decoder.feed(
        _chunk([9], "c", prompt_token_ids=[1, 2, 7, 8])
        + _chunk([10], "d", finish_reason="length")
        + _usage(4, 2)
        + b"data: [DONE]\n\n"
    )
    done = rest[-1]
    assert [e.id for e in rest if isinstance(e, Token)] == [9, 10]
    assert isinstance(done, Done)
    assert done.token_ids.tolist() == [7, 8, 9, 10] and done.text == "abcd"
    assert done.prompt_token_ids is not None and done.prompt_token_ids.tolist() == [1, 2]
    assert done.usage == tokstream.Usage(2, 4, 6)
    assert dropped.token_ids.tolist() == [7, 8]  # the earlier event is untouched


def test_a_continuation_must_echo_the_prompt_plus_the_ids_received() -> None:
    decoder = StreamDecoder()
    decoder.feed(_chunk([7], prompt_token_ids=[1, 2]))
    decoder.restart()
    err = decoder.feed(_chunk([9], prompt_token_ids=[1, 2, 6]))[-1]
    assert isinstance(err, Error) and "did not continue this stream" in str(err.error)
    assert err.token_ids.tolist() == [7]
