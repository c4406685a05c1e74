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
    family_reply_format,
    get_reply_format,
    parse_output,
    route_mistral,
)

from .families import load_family
from .format_samples import TOOLS, Sample, Spec, compose, cut, opens_thinking, samples
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


# Markup bodies: a value's own end tag, and an element that does not start a
# line, are text unless the next element or the end of the call follows
# (README "Tags inside values"); the call's closing tag is always structure.
MARKUP_VALUES = {
    "qwen3_coder": "a</parameter> b <parameter=k>c",
    "glm45": "a</arg_value> b <arg_key>k</arg_key> c",
    "minimax_m2": 'a</parameter> b <parameter name="k">c',
    "deepseek_v32": 'a</｜DSML｜parameter> b <｜DSML｜parameter name="k" string="true">c',
    "deepseek_v4": "a</｜DSML｜parameter> b",
}


@pytest.mark.parametrize("name", NAMES)
def test_a_tag_inside_a_value_is_text(
    name: str, tokenizers_by_family: dict[str, Tokenizer]
) -> None:
    """Every format: a string argument holding the family's own tags parses as written.

    JSON (and Python-literal) bodies: every tag of the format's table, each
    one the special token where the tokenizer has it, inside an open string.
    """
    spec = SPECS[name]
    tok = tokenizers_by_family[spec.family]
    if spec.reply_format.call_body == "json" or spec.reply_format.call_end != "tag":
        value = " ".join(sorted({tag for _, tag, _ in spec.reply_format.tags}))
    else:
        value = MARKUP_VALUES[name]
    calls = [("run_code", {"code": value}), ("noop", {})]
    sample = compose(spec, "", "" if spec.no_content_with_calls else "Running.", calls)
    ids = tok.encode(sample.text).tolist()
    for via in FEEDS:
        events, reply = run(
            tok,
            ids,
            reply_format=spec.reply_format,
            tools=TOOLS,
            via=via,
            thinking="open" if opens_thinking(spec) else "auto",
        )
        check_invariants(tok, ids, events)
        _check_meaning(sample, reply)


@pytest.mark.parametrize("name", [n for n in NAMES if opens_thinking(SPECS[n])])
def test_a_redundant_opening_tag_in_a_prompt_opened_block_is_absorbed(
    name: str, tokenizers_by_family: dict[str, Tokenizer]
) -> None:
    """The prompt opened the thinking block; the model writes its opening tag again."""
    spec = SPECS[name]
    tok = tokenizers_by_family[spec.family]
    (tag,) = {t for state, t, to in spec.reply_format.tags if state == to == "thinking"}
    with_reasoning = [s for s in samples(spec, 20, seed=9) if s.reasoning][:5]
    assert with_reasoning
    for sample in with_reasoning:
        ids = tok.encode(tag + sample.text).tolist()
        for via in FEEDS:
            events, reply = run(
                tok, ids, reply_format=spec.reply_format, tools=TOOLS, via=via, thinking="open"
            )
            check_invariants(tok, ids, events)
            _check_meaning(sample, reply)
            assert reply.segments[0].kind == "thinking"
            assert reply.segments[0].text.startswith(tag + sample.reasoning)


def test_the_tokenizer_family_picks_formats(
    tokenizers_by_family: dict[str, Tokenizer], vllm_home: Path
) -> None:
    for key, tok in tokenizers_by_family.items():
        want = family_reply_format(tok.family, tok.added_tokens)
        assert want == FAMILY_REPLY_FORMATS.get(key, want)
        parser = ResponseParser(tok)  # no format named: the family's
        fmt = get_reply_format(want)
        assert parser._asm._decode_call is fmt.decode_call, key
        assert parser._asm._decode_calls is fmt.decode_calls, key
    # A Tekken v11+ tokenizer (it has [ARGS]) writes v11 calls; a v3 one, lists.
    assert tokenizers_by_family["mistral-v13"].family == "mistral"
    assert ResponseParser(tokenizers_by_family["mistral-v13"])._asm._route is route_mistral
    mistral = tokenizers_by_family["mistral"]
    assert family_reply_format(mistral.family, mistral.added_tokens) == "mistral"
    assert isinstance(Context(tokenizers_by_family["gpt-oss"]).chat_format, HarmonyFormat)
    assert Context(tokenizers_by_family["deepseek-v3.2"]).chat_format.name == "deepseek_v32"
    # Every family here has framing now, each picked by the tokenizer's family.
    framings = {
        "deepseek-v3.1": "deepseek_v31",
        "kimi-k2": "kimi_k2",
        "glm-4.5": "glm45",
        "minimax-m2": "minimax_m2",
        "mistral": "mistral",
        "mistral-v13": "mistral",
        "llama4": "llama4",
        "llama3": "llama3",
    }
    for key, name in framings.items():
        assert Context(tokenizers_by_family[key]).chat_format.name == name, key
    # An explicit name overrides detection; an unknown one says which exist.
    v31 = tokenizers_by_family["deepseek-v3.1"]
    assert ResponseParser(v31, tool_format="hermes")._asm._decode_call is decode_hermes
    with pytest.raises(InvalidRequest, match="unknown chat format"):
        Context(v31, "nope")


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


def _family_reply(tok: Tokenizer, text: str, fmt: str, **kw: object) -> Reply:
    ids = tok.encode(text).tolist()
    reply = parse_output(ids, tokenizer=tok, reply_format=get_reply_format(fmt), tools=TOOLS)
    for via in ("feed", "pull"):  # the same, token by token
        events, streamed = run(tok, ids, via=via, reply_format=get_reply_format(fmt), tools=TOOLS)
        check_invariants(tok, ids, events)
        assert streamed == reply
    return reply


def test_mistral_lists_hand_out_each_call_and_keep_its_id(
    tokenizers_by_family: dict[str, Tokenizer],
) -> None:
    tok = tokenizers_by_family["mistral"]
    text = (
        'Sure.[TOOL_CALLS] [{"name": "noop", "arguments": {}, "id": "a1b2c3d4e"},'
        ' {"name": "get_weather", "arguments": {"city": "[x]"}}] after</s>'
    )
    reply = _family_reply(tok, text, "mistral")
    assert [(c.name, c.arguments, c.call_id, c.ok) for c in reply.tool_calls] == [
        ("noop", {}, "a1b2c3d4e", True),
        ("get_weather", {"city": "[x]"}, None, True),
    ]
    assert reply.content == "Sure. after"
    # Each object is its own call segment, handed out when its JSON balances.
    assert [s.kind for s in reply.segments].count("tool_call") == 2
    # A bare object after [TOOL_CALLS] is a call too; text that is no JSON is content.
    reply = _family_reply(tok, '[TOOL_CALLS]{"name": "noop", "arguments": {}}</s>', "mistral")
    assert [c.name for c in reply.tool_calls] == ["noop"]
    reply = _family_reply(tok, "[TOOL_CALLS] oops</s>", "mistral")
    assert (reply.tool_calls, reply.content) == ((), "oops")


def test_mistral_v11_headers_name_the_call(tokenizers_by_family: dict[str, Tokenizer]) -> None:
    tok = tokenizers_by_family["mistral-v13"]
    text = (
        "[THINK]plan[/THINK]ok[TOOL_CALLS]get_weather[CALL_ID]abc123xyz[ARGS]"
        '{"city": "Paris [TOOL_CALLS]"}[TOOL_CALLS]noop[ARGS]{}</s>'
    )
    reply = _family_reply(tok, text, "mistral_v11")
    assert (reply.reasoning, reply.content) == ("plan", "ok")
    assert [(c.name, c.arguments, c.call_id, c.raw) for c in reply.tool_calls] == [
        (
            "get_weather",
            {"city": "Paris [TOOL_CALLS]"},
            "abc123xyz",
            '{"city": "Paris [TOOL_CALLS]"}',
        ),
        ("noop", {}, None, "{}"),
    ]
    # No [ARGS]: the header runs on, and the call has no name.
    reply = _family_reply(
        tok, '[TOOL_CALLS]noop{"a": 1}[TOOL_CALLS]noop[ARGS]{}</s>', "mistral_v11"
    )
    (call,) = reply.tool_calls
    assert (call.name, call.status) == (None, ToolCallStatus.MALFORMED)
    # Cut inside the arguments: unterminated, named, with the raw text so far.
    reply = _family_reply(tok, '[TOOL_CALLS]noop[ARGS]{"a": ', "mistral_v11")
    (call,) = reply.tool_calls
    assert (call.name, call.status, call.raw) == ("noop", ToolCallStatus.UNTERMINATED, '{"a": ')


def test_pythonic_lists(tokenizers_by_family: dict[str, Tokenizer]) -> None:
    tok = tokenizers_by_family["llama4"]
    text = (
        '<|python_start|>[get_weather(city="Paris", units={"t": "C"}, days=-2), '
        "browser.search(q='a]b', n=true), noop(1), run_code(code=open('x'))]<|python_end|><|eom|>"
    )
    reply = _family_reply(tok, text, "llama4_pythonic")
    got = [(c.name, c.arguments, c.status, c.raw) for c in reply.tool_calls]
    assert got == [
        ("get_weather", {"city": "Paris", "units": {"t": "C"}, "days": -2}, ToolCallStatus.OK,
         'get_weather(city="Paris", units={"t": "C"}, days=-2)'),
        ("browser.search", {"q": "a]b", "n": True}, ToolCallStatus.UNKNOWN_TOOL,
         "browser.search(q='a]b', n=true)"),
        ("noop", None, ToolCallStatus.MALFORMED, "noop(1)"),
        ("run_code", None, ToolCallStatus.INVALID_ARGUMENTS, "run_code(code=open('x'))"),
    ]  # fmt: skip
    # Content that opens with [ and is no list of calls is one malformed call.
    reply = _family_reply(tok, "[1] is a footnote<|eot|>", "llama4_pythonic")
    assert [c.status for c in reply.tool_calls] == [ToolCallStatus.MALFORMED]
    assert reply.content == "is a footnote"  # the space after a list is framing
    reply = _family_reply(tok, "Hi [there]<|eot|>", "llama4_pythonic")
    assert (reply.content, reply.tool_calls) == ("Hi [there]", ())
