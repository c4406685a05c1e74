"""Tool-call body formats: Hermes JSON and Qwen3-Coder markup, schema conversion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tokstream._tokenizer import Tokenizer
from tokstream.core.parser import ToolCallStatus, parse_output
from tokstream.core.parser._hermes import decode_hermes
from tokstream.core.parser._qwen3_coder import convert_value, decode_qwen3_coder
from tokstream.core.parser._tools import normalise_tools

from .parser_helpers import WEATHER_TOOLS, check_invariants, run, spelled

SCHEMAS = normalise_tools(WEATHER_TOOLS)


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.load(tiny_model_dir)


def coder(name: str, params: list[tuple[str, str]]) -> str:
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params)
    return f"\n<function={name}>\n{body}</function>\n"


# -- Hermes -----------------------------------------------------------------------------------


def test_hermes_variants() -> None:
    assert decode_hermes('{"name": "f", "arguments": {"a": 1}}', None)[:3] == (
        "f",
        {"a": 1},
        ToolCallStatus.OK,
    )
    assert decode_hermes('{"name": "f", "parameters": {"a": 1}}', None)[1] == {"a": 1}
    assert decode_hermes('{"name": "f", "arguments": "{\\"a\\": 1}"}', None)[1] == {"a": 1}
    assert decode_hermes('{"name": "f"}', None)[1:3] == ({}, ToolCallStatus.OK)
    assert decode_hermes('{"name": "f", "arguments": "nope"}', None)[2] is ToolCallStatus.MALFORMED
    assert (
        decode_hermes('{"name": "f", "arguments": {}}', {"g": {}})[2] is ToolCallStatus.UNKNOWN_TOOL
    )
    assert decode_hermes('{"name": "f", "arguments": {}}', {"f": {}})[2] is ToolCallStatus.OK


# -- Qwen3-Coder: markup ----------------------------------------------------------------------


def test_coder_exactly_one_newline_each_side_is_markup() -> None:
    body = "\n<function=f>\n<parameter=code>\n\n  x = 1\n\n</parameter>\n</function>\n"
    name, args, status, _ = decode_qwen3_coder(body, None)[:4]
    assert (name, status) == ("f", ToolCallStatus.OK)
    assert args == {"code": "\n  x = 1\n"}
    # No newlines at all is fine too.
    assert decode_qwen3_coder("<function=f><parameter=a>v</parameter></function>", None)[1] == {
        "a": "v"
    }


def test_coder_literal_end_tag_in_value_is_text() -> None:
    value = 'print("</parameter>")\nx = "</parameter> not structural"'
    body = coder("f", [("code", value), ("b", "2")])
    _, args, status, _ = decode_qwen3_coder(body, None)[:4]
    assert status is ToolCallStatus.OK
    assert args == {"code": value, "b": "2"}


def test_coder_missing_parameter_end() -> None:
    body = (
        "\n<function=f>\n<parameter=a>\nvalue a\n"
        "<parameter=b>\nvalue b\n</parameter>\n</function>\n"
    )
    _, args, status, error = decode_qwen3_coder(body, None)[:4]
    assert status is ToolCallStatus.MISSING_PARAMETER_END
    assert args == {"a": "value a", "b": "value b"}
    assert "'a'" in (error or "")
    body = "\n<function=f>\n<parameter=a>\nlast\n</function>\n"
    assert decode_qwen3_coder(body, None)[1:3] == (
        {"a": "last"},
        ToolCallStatus.MISSING_PARAMETER_END,
    )


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("\n{}\n", ToolCallStatus.MALFORMED),
        ("\n<function=>\n</function>\n", ToolCallStatus.MALFORMED),
        ("\n<function=f>\n<parameter=a>\n1\n</parameter>\n", ToolCallStatus.MALFORMED),
        ("\n<function=f>\n</function>\ntrailing junk", ToolCallStatus.MALFORMED),
        ("\n<function=f>\njunk\n</function>\n", ToolCallStatus.MALFORMED),
        ("\n<function=nope>\n</function>\n", ToolCallStatus.UNKNOWN_TOOL),
    ],
)
def test_coder_malformed(body: str, status: ToolCallStatus) -> None:
    _, _, got, error = decode_qwen3_coder(body, SCHEMAS)[:4]
    assert got is status and error


def test_coder_parameter_tag_without_its_bracket_is_malformed() -> None:
    # The ">" of <parameter=city> was lost: the name is not "city\nParis x",
    # the call is MALFORMED, and the value is read from the next line.
    body = "\n<function=get_weather>\n<parameter=city\nParis x > y\n</parameter>\n</function>\n"
    name, args, status, error = decode_qwen3_coder(body, SCHEMAS)[:4]
    assert (name, args, status) == (
        "get_weather",
        {"city": "Paris x > y"},
        ToolCallStatus.MALFORMED,
    )
    assert error and "'>'" in error


# -- Qwen3-Coder: schema conversion -----------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "text", "value"),
    [
        ("city", "Paris", "Paris"),
        ("city", "42", "42"),
        ("days", "3", 3),
        ("days", "-12", -12),
        ("hourly", "true", True),
        ("hourly", "False", False),
        ("ratio", "0.25", 0.25),
        ("ratio", "7", 7),
        ("options", '{"a": [1, 2]}', {"a": [1, 2]}),
        ("tags", '["x", 1]', ["x", 1]),
        ("nothing", "null", None),
        ("maybe", "5", 5),
        ("maybe", "null", None),
        ("undeclared", "5", "5"),
    ],
)
def test_coder_converts_to_schema_type(param: str, text: str, value: Any) -> None:
    body = coder("get_weather", [(param, text)])
    _, args, status, _ = decode_qwen3_coder(body, SCHEMAS)[:4]
    assert status is ToolCallStatus.OK
    assert args == {param: value}
    assert type(args[param]) is type(value)  # type: ignore[index]


@pytest.mark.parametrize(
    ("param", "text"),
    [("days", "three"), ("days", "1.5"), ("hourly", "yes"), ("options", "[1]"), ("tags", "{")],
)
def test_coder_bad_value_keeps_string_and_says_so(param: str, text: str) -> None:
    body = coder("get_weather", [(param, text), ("city", "Oslo")])
    _, args, status, error = decode_qwen3_coder(body, SCHEMAS)[:4]
    assert status is ToolCallStatus.INVALID_ARGUMENTS
    assert args == {param: text, "city": "Oslo"}
    assert param in (error or "")


def test_coder_without_schema_keeps_strings() -> None:
    body = coder("get_weather", [("days", "3"), ("hourly", "true"), ("options", "{}")])
    assert decode_qwen3_coder(body, None)[1] == {"days": "3", "hourly": "true", "options": "{}"}


def test_convert_value_any_of() -> None:
    schema = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert convert_value("4", schema) == (True, 4)
    assert convert_value("four", schema) == (True, "four")
    assert convert_value("x", {}) == (True, "x")


# -- Qwen3-Coder through the streaming parser ----------------------------------------------------


def test_coder_split_tags_and_two_calls(tok: Tokenizer) -> None:
    ids = spelled(
        tok,
        "Sure.\n",
        "<",
        "tool_call",
        ">",
        coder("get_weather", [("city", "Paris"), ("days", "2")]),
        "</tool_call>",
        "\n",
        "<tool_call>",
        coder("convert", [("code", "a </parameter> b")]),
        "</tool_",
        "call>",
        "<|im_end|>",
    )
    events, reply = run(tok, ids, tool_format="qwen3_coder", tools=WEATHER_TOOLS)
    check_invariants(tok, ids, events)
    assert [(c.name, c.arguments, c.status) for c in reply.tool_calls] == [
        ("get_weather", {"city": "Paris", "days": 2}, ToolCallStatus.OK),
        ("convert", {"code": "a </parameter> b"}, ToolCallStatus.OK),
    ]
    assert reply.content == "Sure.\n\n"


def test_coder_unclosed_call_and_missing_parameter_end(tok: Tokenizer) -> None:
    text = "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</function>\n</tool_call>"
    reply = parse_output(text, tokenizer=tok, tool_format="qwen3_coder", tools=WEATHER_TOOLS)
    [call] = reply.tool_calls
    assert call.status is ToolCallStatus.MISSING_PARAMETER_END
    assert call.arguments == {"city": "Paris"}
    text = "<tool_call>\n<function=get_weather>\n<parameter=city>\nPar"
    reply = parse_output(text, tokenizer=tok, tool_format="qwen3_coder")
    [call] = reply.tool_calls
    assert call.status is ToolCallStatus.UNTERMINATED
    assert call.raw == text[len("<tool_call>") :]


_VALUE_CHARS = st.sampled_from([*list('ab <>/=\n\t"{}'), "</parameter>", "<parameter=", "世"])


@settings(max_examples=300)
@given(values=st.lists(st.lists(_VALUE_CHARS, max_size=12).map("".join), min_size=1, max_size=3))
def test_coder_values_round_trip(values: list[str]) -> None:
    # Any value round-trips unless it itself contains markup in structural
    # position (a "</parameter>" followed by a parameter/function tag or the end,
    # or a "<parameter=" at a line start): those are ambiguous by design.
    params = [(f"p{k}", v) for k, v in enumerate(values)]
    body = coder("f", params)
    for k, v in enumerate(values):
        rest = body[body.index(f"<parameter=p{k}>") :]
        assume("\n<parameter=" not in v and not v.startswith("<parameter="))
        assume(
            not any(
                rest.find("</parameter>", i) == i
                and rest[i + 12 :].lstrip(" \t\r\n").startswith(("<parameter=", "</function>"))
                for i in range(len(f"<parameter=p{k}>\n"), len(f"<parameter=p{k}>\n") + len(v))
            )
        )
    _, args, status, _ = decode_qwen3_coder(body, None)[:4]
    assert status is ToolCallStatus.OK
    assert args == dict(params)
