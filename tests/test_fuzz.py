"""Fuzzing the sans-IO layers (issue 10, section 6): whatever arrives, nothing escapes the tree.

Hypothesis drives the SSE decoder, the stream decoder and the response parser
with hostile input, split at random: bytes that are almost server-sent events,
``data:`` payloads that are almost vLLM chunks (IDs out of range, wrong types,
bad UTF-8 and escapes, usage that lies, error envelopes, aborts, truncation),
and token IDs of any value for every reply format. Each must:

* raise nothing but the documented tree (the SSE decoder may raise
  ``ProtocolError``; the stream decoder and the parser raise nothing and
  report what went wrong as an ``Error`` event or a call's status);
* keep memory bounded: the SSE buffer never holds more than ``max_event_size``;
* keep the IDs exact: the ``Token`` events are the terminal event's IDs, a
  ``Done`` is only reached when nothing was skipped, and a parsed reply's
  segments are exactly the IDs fed.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import tokstream
from tokstream import Done, Error, ResponseParser, SSEDecoder, StreamDecoder, Token
from tokstream._tokenizer import Tokenizer
from tokstream.core.parser import registered_reply_formats

from .parser_helpers import check_invariants

MAX_EVENT = 2048

# -- bytes that are almost server-sent events -----------------------------------------------

_SSE_BITS = [
    b"data: ", b"data:", b"data", b"\n", b"\r", b"\r\n", b"\n\n", b": keep-alive",
    b"event: ping", b"id: 7", b"retry: 10", b"[DONE]", b"{", b"}", b" ", b"\xff\xfe",
    b"\x00", "é世🫠".encode(), b"x" * 700,
]  # fmt: skip


@st.composite
def _splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


_sse_bytes = st.lists(st.sampled_from(_SSE_BITS) | st.binary(max_size=64), max_size=40).map(
    b"".join
)


@settings(max_examples=300)
@given(data=st.data(), raw=_sse_bytes)
def test_the_sse_decoder_raises_only_protocol_error_and_stays_bounded(
    data: st.DataObject, raw: bytes
) -> None:
    decoder = SSEDecoder(max_event_size=MAX_EVENT)
    for piece in data.draw(_splits(raw)):
        try:
            events = decoder.feed(piece)
        except tokstream.ProtocolError as exc:
            assert "max_event_size" in str(exc)
            return
        assert all(len(e.data) <= MAX_EVENT for e in events)
        # What it holds between calls: the line being read and the event's data.
        assert decoder._partial_size + decoder._data_size <= MAX_EVENT
    with contextlib.suppress(tokstream.ProtocolError):
        decoder.finish()


# -- payloads that are almost vLLM chunks ---------------------------------------------------

_ids = st.lists(
    st.integers(0, 50) | st.sampled_from([-1, 2**31 - 1, 2**31, -(2**31), 2**63]), max_size=4
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


@st.composite
def _chunk(draw: st.DrawFn) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": draw(st.sampled_from([0, 0, 0, 1])),
        "text": draw(st.text(max_size=6) | st.none() | st.integers()),
        "token_ids": draw(_ids | st.none() | st.text(max_size=3)),
        "finish_reason": draw(st.sampled_from([None, None, None, "stop", "length", "abort"])),
    }
    if draw(st.booleans()):
        choice["prompt_token_ids"] = draw(_ids)
    if draw(st.integers(0, 5)) == 0:
        choice["logprobs"] = {"token_logprobs": draw(st.lists(st.floats() | st.none()))}
    body: dict[str, Any] = {"id": "cmpl-1", "object": "text_completion", "choices": [choice]}
    if draw(st.integers(0, 6)) == 0:
        body = {"id": "cmpl-1", "choices": [], "usage": draw(_json)}
    if draw(st.integers(0, 8)) == 0:
        body = {"error": draw(_json)}
    return body


_payload = (
    _chunk().map(lambda c: json.dumps(c).encode())
    | _json.map(lambda v: json.dumps(v).encode())
    | st.sampled_from([b"[DONE]", b"", b"{", b"-Infinity", b'"\\ud800"', b"\xc3("])
    | st.binary(max_size=20)
)
_event = st.tuples(_payload, st.sampled_from([b"\n\n", b"\r\n\r\n", b"\n", b""])).map(
    lambda pair: b"data: " + pair[0] + pair[1]
)


RECORDED = (Path(__file__).parent / "data" / "forced_hermes.sse").read_bytes()
RECORDED_EVENTS = [e + b"\n\n" for e in RECORDED.split(b"\n\n") if e.strip()]


@st.composite
def _mutated_recording(draw: st.DrawFn) -> list[bytes]:
    """A real vLLM stream with a few events dropped, replaced, duplicated or cut."""
    events = list(RECORDED_EVENTS)
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(events) - 1))
        how = draw(st.sampled_from(["drop", "replace", "insert", "cut", "flip"]))
        if how == "drop":
            del events[i]
        elif how == "replace":
            events[i] = draw(_event)
        elif how == "insert":
            events.insert(i, draw(_event))
        elif how == "cut":
            events = [*events[:i], events[i][: draw(st.integers(0, len(events[i])))]]
        else:
            at = draw(st.integers(0, len(events[i]) - 1))
            events[i] = events[i][:at] + bytes([draw(st.integers(0, 255))]) + events[i][at + 1 :]
        if not events:
            break
    return events


@settings(max_examples=400)
@given(data=st.data(), events=st.lists(_event, max_size=12) | _mutated_recording())
def test_the_stream_decoder_never_raises_and_never_loses_an_id(
    data: st.DataObject, events: list[bytes]
) -> None:
    raw = b"".join(events)
    decoder = StreamDecoder(max_event_size=MAX_EVENT, url="http://h/v1/completions")
    out: list[tokstream.Event] = []
    for piece in data.draw(_splits(raw)):
        out += decoder.feed(piece)
        assert decoder._sse._partial_size + decoder._sse._data_size <= MAX_EVENT
    out += decoder.finish()
    assert decoder.finished
    terminal = out[-1]
    assert isinstance(terminal, (Done, Error))
    event(type(terminal).__name__ if isinstance(terminal, Done) else type(terminal.error).__name__)
    assert not any(isinstance(e, (Done, Error)) for e in out[:-1])
    ids = [e.id for e in out if isinstance(e, Token)]
    assert terminal.token_ids.tolist() == ids
    assert all(0 <= i < 2**31 for i in ids)
    if isinstance(terminal, Error):
        assert isinstance(terminal.error, (tokstream.StreamError, tokstream.APIError))
        assert "http://h/v1/completions" in str(terminal.error)
    else:
        # Done only when nothing could have been lost.
        assert terminal.diagnostics.parse_errors == 0
        assert terminal.finish_reason not in (None, "abort")
        if terminal.usage is not None:
            assert terminal.usage.completion_tokens == len(ids)
    # The same bytes fed whole end the same way.
    whole = StreamDecoder(max_event_size=MAX_EVENT, url="http://h/v1/completions")
    again = whole.feed(raw) + whole.finish()
    assert type(again[-1]) is type(terminal)
    assert again[-1].token_ids.tolist() == ids


# -- token IDs of any value, for every reply format -----------------------------------------


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.load(tiny_model_dir)


@pytest.mark.parametrize("fmt", registered_reply_formats())
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_parser_takes_any_ids_and_keeps_them_exact(
    tok: Tokenizer, fmt: str, data: st.DataObject
) -> None:
    # IDs around the tags that matter (tool-call and thinking markers, JSON
    # punctuation, end tokens), anywhere in the vocabulary, and past its end.
    special = [int(i) for i in tok.encode('<tool_call></tool_call><think></think>{"name":}')]
    special += [tok.vocab_size - 1, tok.vocab_size, tok.vocab_size + 99, 0]
    added = list(tok.added_tokens.values())[:40] if hasattr(tok, "added_tokens") else []
    ids = data.draw(
        st.lists(
            st.sampled_from(special + added) | st.integers(0, tok.vocab_size + 100), max_size=60
        )
    )
    groups = data.draw(st.lists(st.integers(1, 9), max_size=20))
    thinking = data.draw(st.sampled_from(["auto", "open", "off"]))
    try:
        parser = ResponseParser(tok, tool_format=fmt, thinking=thinking)
    except tokstream.InvalidRequest:  # "open" for a format without thinking: caller input
        parser = ResponseParser(tok, tool_format=fmt)
    events: list[Any] = []
    pos = 0
    for size in groups:
        events += parser.feed_ids(ids[pos : pos + size])
        pos += size
    events += parser.feed_ids(ids[pos:])
    events += parser.finish()
    if all(i < tok.vocab_size for i in ids):
        check_invariants(tok, ids, events)
    else:  # text of an ID past the vocabulary is the tokenizer's affair; the IDs are not
        reply = events[-1]
        assert [int(i) for s in reply.segments for i in s.ids] == ids
    for call in events[-1].tool_calls:
        assert isinstance(call.status, tokstream.ToolCallStatus)
        if call.status is not tokstream.ToolCallStatus.OK:
            with pytest.raises(tokstream.OutputError):
                call.raise_for_status()
