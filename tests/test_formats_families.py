"""Every family's tool-call format, on its real tokenizer: meaning, exact IDs, any grouping.

For each spec in ``tests/format_specs.py`` (no vLLM needed here; the
differential run against vLLM's parsers is ``test_formats_differential.py``):

* generated outputs parse to exactly what was generated (reasoning, content,
  calls with their arguments), every call ``OK``;
* the concatenated leaf IDs equal the input IDs, the segments' text is the
  decode, deltas equal content and reasoning;
* whole, one token at a time, and random groupings (hypothesis) give the same
  reply, through every way into the parser;
* a reply cut at every position is still exact, and a call it cuts off is
  ``UNTERMINATED`` with its raw text.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokstream import Context, InvalidRequest
from tokstream._tokenizer import Tokenizer
from tokstream.chat import HarmonyFormat
from tokstream.core.parser import (
    FAMILY_REPLY_FORMATS,
    Reply,
    ResponseParser,
    ToolCallStatus,
    decode_hermes,
    get_reply_format,
    parse_output,
)

from .families import load_family
from .format_samples import TOOLS, Sample, Spec, cut, opens_thinking, samples
from .format_specs import SPECS
from .parser_helpers import FEEDS, check_invariants, run

NAMES = sorted(SPECS)


@pytest.fixture(scope="session")
def tokenizers_by_family(vllm_home: Path) -> dict[str, Tokenizer]:
    return {s.family: load_family(s.family, vllm_home) for s in SPECS.values()}


def _parse(spec: Spec, tok: Tokenizer, ids: list[int]) -> Reply:
    return parse_output(
        ids,
        tokenizer=tok,
        reply_format=spec.reply_format,
        tools=TOOLS,
        thinking="open" if opens_thinking(spec) else "auto",
    )


def _check_meaning(sample: Sample, reply: Reply) -> None:
    assert reply.reasoning == sample.reasoning
    assert reply.content == sample.content
    got = [(c.name, c.arguments) for c in reply.tool_calls]
    assert got == sample.calls
    assert all(c.status is ToolCallStatus.OK for c in reply.tool_calls), reply.tool_calls
    assert not reply.thinking_unterminated


@pytest.mark.parametrize("name", NAMES)
def test_generated_outputs_parse_to_what_was_generated(
    name: str, tokenizers_by_family: dict[str, Tokenizer]
) -> None:
    spec = SPECS[name]
    tok = tokenizers_by_family[spec.family]
    for sample in samples(spec, 80, seed=11):
        ids = tok.encode(sample.text).tolist()
        reply = _parse(spec, tok, ids)
        _check_meaning(sample, reply)
        assert reply.token_ids.tolist() == ids
        kinds = [s.kind for s in reply.segments]
        assert ("tool_call" in kinds) == bool(sample.calls)
        assert (kinds[-1] == "stop") == sample.text.endswith(spec.stop)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("via", FEEDS)
def test_every_way_in_gives_the_same_reply(
    name: str, via: str, tokenizers_by_family: dict[str, Tokenizer]
) -> None:
    spec = SPECS[name]
    tok = tokenizers_by_family[spec.family]
    thinking = "open" if opens_thinking(spec) else "auto"
    for sample in samples(spec, 12, seed=5):
        ids = tok.encode(sample.text).tolist()
        options = {"reply_format": spec.reply_format, "tools": TOOLS, "thinking": thinking}
        _, whole = run(tok, ids, [len(ids)], via=via, **options)
        events, reply = run(tok, ids, via=via, **options)
        check_invariants(tok, ids, events)
        assert reply == whole
        _check_meaning(sample, reply)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40)
@given(data=st.data())
def test_random_groupings_give_the_same_tree(
    name: str, data: st.DataObject, tokenizers_by_family: dict[str, Tokenizer]
) -> None:
    spec = SPECS[name]
    tok = tokenizers_by_family[spec.family]
    sample = data.draw(st.sampled_from(samples(spec, 10, seed=3)))
    ids = tok.encode(sample.text).tolist()
    sizes = data.draw(st.lists(st.integers(1, 9), max_size=len(ids)))
    via = data.draw(st.sampled_from(FEEDS))
    thinking = "open" if opens_thinking(spec) else "auto"
    options = {"reply_format": spec.reply_format, "tools": TOOLS, "thinking": thinking}
    events, reply = run(tok, ids, sizes, via=via, **options)
    check_invariants(tok, ids, events)
    _, whole = run(tok, ids, [len(ids)], via=via, **options)
    assert reply == whole
    _check_meaning(sample, reply)


@pytest.mark.parametrize("name", NAMES)
def test_cut_at_every_position(name: str, tokenizers_by_family: dict[str, Tokenizer]) -> None:
    spec = SPECS[name]
    tok = tokenizers_by_family[spec.family]
    thinking = "open" if opens_thinking(spec) else "auto"
    with_calls = [s for s in samples(spec, 30, seed=7) if len(s.calls) >= 2][:2]
    assert with_calls
    for sample in with_calls:
        ids = tok.encode(sample.text).tolist()
        full = _parse(spec, tok, ids)
        for prefix in cut(ids):
            events, reply = run(
                tok,
                prefix,
                [len(prefix)],
                reply_format=spec.reply_format,
                tools=TOOLS,
                thinking=thinking,
            )
            check_invariants(tok, prefix, events)
            # Calls that closed before the cut are the full reply's calls.
            done = [c for c in reply.tool_calls if c.status is not ToolCallStatus.UNTERMINATED]
            assert done == list(full.tool_calls[: len(done)])
            cut_off = [c for c in reply.tool_calls if c.status is ToolCallStatus.UNTERMINATED]
            assert len(cut_off) <= 1 and reply.tool_calls[len(done) :] == tuple(cut_off)
            for call in cut_off:
                assert call.error and call.ids.tolist() == prefix[call.start_token :]
                assert call.raw in tok.decode(prefix)


def test_the_tokenizer_family_picks_formats(
    tokenizers_by_family: dict[str, Tokenizer], vllm_home: Path
) -> None:
    for family, tok in tokenizers_by_family.items():
        want = FAMILY_REPLY_FORMATS[family]
        parser = ResponseParser(tok)  # no format named: the family's
        assert parser._asm._decode_call is get_reply_format(want).decode_call, family
    assert isinstance(Context(tokenizers_by_family["gpt-oss"]).chat_format, HarmonyFormat)
    assert Context(tokenizers_by_family["deepseek-v3.2"]).chat_format.name == "deepseek_v32"
    # An explicit name overrides detection; a family without framing says so.
    v31 = tokenizers_by_family["deepseek-v3.1"]
    with pytest.raises(InvalidRequest, match=r"no chat framing for the 'deepseek-v3\.1'"):
        Context(v31)
    assert ResponseParser(v31, tool_format="hermes")._asm._decode_call is decode_hermes


def test_call_ids_are_kept_where_the_format_has_them(
    tokenizers_by_family: dict[str, Tokenizer],
) -> None:
    spec = SPECS["kimi_k2"]
    tok = tokenizers_by_family[spec.family]
    with_calls = [s for s in samples(spec, 20, seed=4) if s.calls]
    assert with_calls
    for sample in with_calls:
        reply = _parse(spec, tok, tok.encode(sample.text).tolist())
        want = [f"functions.{name}:{i}" for i, (name, _) in enumerate(sample.calls)]
        assert [c.call_id for c in reply.tool_calls] == want
    # Formats whose calls carry no ID leave it None.
    spec = SPECS["deepseek_v31"]
    tok = tokenizers_by_family[spec.family]
    sample = next(s for s in samples(spec, 20, seed=4) if s.calls)
    assert {c.call_id for c in _parse(spec, tok, tok.encode(sample.text).tolist()).tool_calls} == {
        None
    }
