"""Realistic model outputs for every tool-call format, and what they should parse to (not tests).

A :class:`Spec` says how one family writes reasoning, calls and the end of a
reply; :func:`samples` draws seeded outputs from it: many calls, nested JSON,
unicode, text before and after, with the expected reasoning / content / calls.
:func:`variants` derives the cut and malformed outputs from a good one.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokstream.core.parser import ReplyFormat

Call = tuple[str, dict[str, Any]]

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "units": {"type": "object"},
                },
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run_code",
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "args": {"type": "array"}},
            },
        },
    },
    {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}},
]

WORDS = [
    "Paris", "東京", "Zürich", "naïve", "emoji 🌦️", "a<b", "x > y", "{braces}", "[list]",
    'say "hi"', "back\\slash", "tab\there", "line\nbreak", "100%", "ok", "the", "weather",
    "data", "42", "-3.5", "ünïcödé", "Ελληνικά", "€",
]  # fmt: skip


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(7 if depth < 2 else 4)
    if kind == 0:
        return _text(rng, rng.randint(1, 4))
    if kind == 1:
        return rng.randint(-1000, 10**6)
    if kind == 2:
        return rng.choice([True, False, None, 2.5])
    if kind == 3:
        return rng.choice(["", " spaced ", "{}", "[1]"])
    if kind in (4, 5):
        return {f"k{i}": _value(rng, depth + 1) for i in range(rng.randint(0, 3))}
    return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]


def random_call(rng: random.Random, *, flat: bool = False) -> Call:
    """A call to one of :data:`TOOLS` with random (``flat``: string-or-scalar) arguments."""
    name = rng.choice(["get_weather", "run_code", "noop"])
    args: dict[str, Any] = {}
    if name == "get_weather":
        args["city"] = _text(rng, rng.randint(1, 3))
        if rng.random() < 0.6:
            args["days"] = rng.randint(1, 14)
        if rng.random() < 0.5 and not flat:
            args["units"] = {"temp": rng.choice(["C", "F"]), "extra": _value(rng, 1)}
    elif name == "run_code":
        args["code"] = 'print("hi")\nfor i in range(3):\n    x = {"a": [i]}\n'
        if not flat:
            args["args"] = [_value(rng, 1) for _ in range(rng.randint(0, 3))]
    return name, args


@dataclass(frozen=True)
class Spec:
    """How one family writes a reply, and where its reference lives.

    Attributes:
        name: The tokstream reply format's name.
        family: The tokenizer directory (``tests.families.family_dir``).
        reply_format: tokstream's table.
        vllm_tool: vLLM's ``--tool-call-parser`` name.
        vllm_reasoning: vLLM's ``--reasoning-parser`` name, or ``None``.
        render_calls: Text of a reply's calls (the whole section).
        stop: The end-of-reply token text.
        think: The thinking block's ``(open, close)``, or ``None``.
        chat_kwargs: ``chat_template_kwargs`` for vLLM's parser.
        flat_args: Arguments are strings and scalars only at the top level
            (markup formats that write one value per parameter).
        text_after_calls: Whether the family may write content after its calls.
        call_lead: Text the template writes between content and the calls
            (content, for the parser: it is outside every tag).
        between_calls: Text ``render_calls`` writes between two calls outside
            every tag (content too: Qwen's newline between ``<tool_call>``
            blocks).
        always_think: The reply always has a thinking block (maybe empty).
        no_content_with_calls: A reply is either calls or content (Llama 3.1).
        compose: Writes the whole reply from (reasoning, content, calls), for
            families whose replies are not reasoning + content + calls + stop.
        strip_stop: Whether vLLM's parser sees the reply without its stop
            token (it does for text parsers; harmony's parses the IDs).
    """

    name: str
    family: str
    reply_format: ReplyFormat
    vllm_tool: str
    vllm_reasoning: str | None
    render_calls: Callable[[list[Call]], str]
    stop: str
    think: tuple[str, str] | None = None
    chat_kwargs: dict[str, Any] = field(default_factory=dict)
    flat_args: bool = False
    text_after_calls: bool = False
    call_lead: str = ""
    between_calls: str = ""
    always_think: bool = False
    no_content_with_calls: bool = False
    compose: Callable[[str, str, list[Call]], str] | None = None
    strip_stop: bool = True


@dataclass(frozen=True)
class Sample:
    """One output and what it means."""

    text: str
    reasoning: str
    content: str
    calls: list[Call]
    kind: str = "good"


def samples(spec: Spec, n: int, seed: int, *, prose: int = 1) -> list[Sample]:
    """``n`` well-formed outputs of ``spec`` (seeded); ``prose`` scales the length
    of reasoning and content (a benchmark wants mostly text, as real replies are)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        reasoning = ""
        if (spec.think or spec.compose) and rng.random() < (0.8 if opens_thinking(spec) else 0.5):
            reasoning = _text(rng, rng.randint(2, 12) * prose)
        content = _text(rng, rng.randint(0, 10) * prose) if rng.random() < 0.7 else ""
        calls = [random_call(rng, flat=spec.flat_args) for _ in range(rng.choice([0, 1, 1, 2, 3]))]
        if i % 7 == 0:
            calls = [random_call(rng, flat=spec.flat_args) for _ in range(4)]
        if spec.no_content_with_calls:
            reasoning = ""
            content = "" if calls else content.lstrip(" {[")
        out.append(compose(spec, reasoning, content, calls))
    return out


def compose(spec: Spec, reasoning: str, content: str, calls: list[Call]) -> Sample:
    """The reply ``spec``'s family writes for these parts, and what it means."""
    if spec.compose is not None:
        return Sample(spec.compose(reasoning, content, calls), reasoning, content, calls)
    text = ""
    if spec.think and (reasoning or not spec.think[0] or spec.always_think):
        # think[0] == "": the prompt opened the block, so the reply closes it.
        text += spec.think[0] + reasoning + spec.think[1]
    text += content
    if calls:
        content += spec.call_lead + spec.between_calls * (len(calls) - 1)
        text += spec.call_lead + spec.render_calls(calls)
    text += spec.stop
    return Sample(text, reasoning, content, calls)


def opens_thinking(spec: Spec) -> bool:
    """Whether the prompt opened the spec's thinking block (the reply starts in it)."""
    return spec.think is not None and not spec.think[0]


def cut(ids: list[int], every: int = 1) -> list[list[int]]:
    """Every proper prefix of ``ids`` (each ``every``-th), as a reply cut by ``max_tokens``."""
    return [ids[:k] for k in range(1, len(ids), every)]


def malformed(spec: Spec, sample: Sample, seed: int) -> list[str]:
    """Malformed variants of a sample with calls: an unknown tool, and three
    single-character deletions inside the calls (a tag, a quote, a brace...)."""
    assert sample.calls
    rng = random.Random(seed)
    name = sample.calls[0][0]
    out = [sample.text.replace(name, name + "_x", 1)]
    rendered = spec.render_calls(sample.calls)
    if spec.compose is not None or rendered not in sample.text:
        start, end = sample.text.index(name) - 30, len(sample.text) - 1
    else:
        start = sample.text.index(rendered)
        end = start + len(rendered)
    for _ in range(3):
        p = rng.randrange(max(start, 0), end)
        out.append(sample.text[:p] + sample.text[p + 1 :])
    return out


def dumps(value: Any) -> str:
    """JSON as the families' templates write it (``ensure_ascii=False``)."""
    return json.dumps(value, ensure_ascii=False)
