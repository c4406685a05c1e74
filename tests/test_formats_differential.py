"""tokstream's parser against vLLM's own parser for each format, on generated outputs.

For every spec in ``tests/format_specs.py``: well-formed outputs (many calls,
nested JSON, unicode, text before and after), the same outputs cut at every
token position (as ``max_tokens`` cuts them), and malformed variants, each
tokenized with the family's real tokenizer. vLLM answers in its own venv
(``tests/families.reference``): ``Parser.parse`` on the whole text, and
``parse_delta`` fed token by token. tokstream parses the IDs.

Every difference is classified, and the classification is part of the test:
:data:`POLICIES` lists the documented differences (each one where tokstream
is deliberately not vLLM, or where vLLM is wrong); :func:`classify` names the
one a difference falls under. A difference it cannot name fails the test as
"unclassified", so a wrong parse by tokstream cannot hide among them.

Marked ``vllm``: it needs the CPU vLLM venv (``make test`` installs it). The
reference answers are cached under ``<vllm home>/reference-cache``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tokstream._tokenizer import Tokenizer
from tokstream.core.parser import Reply, ToolCallStatus, parse_output

from .families import family_dir, load_family, reference
from .format_samples import TOOLS, Spec, cut, malformed, opens_thinking, samples
from .format_specs import SPECS

pytestmark = pytest.mark.vllm

POLICIES: dict[str, str] = {
    "malformed_reported": (
        "policy: a malformed call (unknown tool, broken arguments, a damaged tag) is reported "
        "with its status and raw text, and the text around it stays where the tags put it; "
        "vLLM drops the call, passes the raw arguments on, or turns the output into content. "
        "Every call tokstream reports well-formed is a generated call, or the call vLLM reads "
        "too (the damage fell inside a value)"
    ),
    "malformed_markup": (
        "policy: damaged markup stays text where it is (content, or framing inside a tool-call "
        "section), and every call tokstream reports is one of the generated calls; vLLM may "
        "differ: after a damaged tag its parsers turn the rest into content, merge two calls "
        "into one with raw arguments, or take garbage as a tool name"
    ),
    "value_runs_past_damaged_tag": (
        "policy (a value's end tag is structural only before the next parameter or the end "
        "of the call): when the next parameter's opening tag is damaged, the value runs on "
        "and holds it as text; vLLM ends the value at the first end tag and drops the rest"
    ),
    "cut_call_reported": (
        "policy: a call cut off by the end of the reply is reported UNTERMINATED with its raw "
        "text; vLLM drops it, or (streaming) has already sent a name and partial arguments"
    ),
    "cut_tag_is_text": (
        "policy: text cut off by the end of the reply in the middle of a tag or a header "
        "belongs to the block it was in, so content is a prefix of vLLM's or the other way "
        "round: vLLM's streaming parser never releases a held-back tag prefix, and its "
        "harmony recovery returns a cut header as final content"
    ),
    "cut_call_drops_all": (
        "vLLM wrong (llama3_json and hermes parse): one call cut off by the end of the reply "
        "makes it drop every call, the complete ones too, and return the whole output as content; "
        "tokstream hands out the complete calls and reports the cut one UNTERMINATED"
    ),
    "cut_header_reported": (
        "policy: a harmony reply cut inside a message header still yields the block its "
        "header names (an unterminated call, unterminated reasoning, or text); "
        "openai_harmony's StreamableParser raises HarmonyError at the end of the stream"
    ),
    "cut_reasoning_kept": (
        "vLLM wrong (streaming): reasoning cut off before its end tag is lost, or turned "
        "into content, when the stream ends"
    ),
    "whitespace_before_calls": (
        "policy: content that is only whitespace before a tool-call section is kept (it is "
        "what the model wrote); vLLM drops it when calls follow"
    ),
    "content_stripped_with_calls": (
        "policy: content before calls is kept as written; vLLM's parse() strips its "
        "surrounding whitespace when calls follow (its own parse_delta does not)"
    ),
    "vllm_stream_loses_text": (
        "vLLM wrong (streaming): parse_delta drops or reorders text that parse() keeps"
    ),
    "stream_call_separator_as_content": (
        "vLLM wrong (deepseek_v3 parse_delta): the newline R1's template writes between two "
        "calls of a tool-call section streams out as content, after the real content (its "
        "parse() drops it); tokstream keeps it in the section, as framing"
    ),
    "newlines_between_calls_kept": (
        "policy: the newline Qwen's template writes between two <tool_call> blocks is content "
        "(it is outside every tag, where the model wrote it); vLLM's hermes parser drops it"
    ),
    "call_id_in_name": (
        "vLLM wrong (mistral, v11 calls with an ID): its parser takes [CALL_ID]ID as part of "
        "the tool's name; tokstream reads the name, and keeps the ID as call_id"
    ),
    "cut_list_is_content": (
        "vLLM wrong (mistral parse): a call list cut off by the end of the reply becomes the "
        "content, from [TOOL_CALLS] on, and the text before it and every complete call are "
        "dropped; tokstream keeps the text, hands out the complete calls and reports the cut "
        "one UNTERMINATED"
    ),
    "stream_float_rounded": (
        "vLLM wrong (llama4_pythonic parse_delta): a float argument streams rounded (2.5 "
        "arrives as 2.0) while parse() reads it right; tokstream reads it as written"
    ),
}
"""Every documented difference: name -> what differs and who is right."""


def _ours(spec: Spec, tok: Tokenizer, ids: list[int]) -> Reply:
    return parse_output(
        ids,
        tokenizer=tok,
        reply_format=spec.reply_format,
        tools=TOOLS,
        thinking="open" if opens_thinking(spec) else "auto",
    )


def _theirs_calls(answer: dict[str, Any]) -> list[tuple[str, Any]]:
    out = []
    for name, args in answer["calls"]:
        try:
            out.append((name, json.loads(args) if args else {}))
        except ValueError:
            out.append((name, args))
    return out


def _floats_only(ours: Any, theirs: Any) -> bool:
    """Whether two values differ at most in float leaves (same structure)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(_floats_only(ours[k], theirs[k]) for k in ours)
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(map(_floats_only, ours, theirs))
    return ours == theirs or (isinstance(ours, float) and isinstance(theirs, float))


def _normalised(answer: dict[str, Any], ours: list[Any]) -> tuple[list[Any], list[str]]:
    """vLLM's calls with its known misreadings undone, and the policies that did it."""
    theirs = [] if "error" in answer else _theirs_calls(answer)
    notes = []
    if any(isinstance(n, str) and "[CALL_ID]" in n for n, _ in theirs):
        theirs = [(n.split("[CALL_ID]")[0], a) for n, a in theirs]
        notes.append("call_id_in_name")
    if (
        theirs != ours
        and len(theirs) == len(ours)
        and all(
            x[0] == y[0] and _floats_only(x[1], y[1]) for x, y in zip(ours, theirs, strict=True)
        )
    ):
        theirs = list(ours)
        notes.append("stream_float_rounded")
    return theirs, notes


def _subsequence(ours: list[Any], theirs: list[Any]) -> bool:
    it = iter(theirs)
    return all(any(x == y for y in it) for x in ours)


_NAME = re.compile(r"^[A-Za-z_][\w.\-]*$")


def _swallowed(ours: list[Any], want: list[Any]) -> bool:
    """Whether the calls are ``want`` but for values that run on past a damaged
    tag: each such value is text that starts with the wanted value and holds an
    end tag after it (and the parameters it swallowed are missing)."""
    if len(ours) != len(want) or ours == want:
        return False
    swallowed = False
    for (name, args), (want_name, want_args) in zip(ours, want, strict=True):
        if name != want_name or not set(args) <= set(want_args):
            return False
        for key, value in args.items():
            w = want_args[key]
            if value == w:
                continue
            text = w if isinstance(w, str) else json.dumps(w, ensure_ascii=False)
            if not (isinstance(value, str) and value.startswith(text) and "</" in value):
                return False
            swallowed = True
    return swallowed


def _classify_malformed(reply: Reply, answer: dict[str, Any], want: list[Any]) -> list[str]:
    """A damaged output: judged against what was generated, not only against vLLM.

    tokstream must never report a call ``OK`` that was not generated: every
    well-formed call it reports is one of the generated calls, or (when the
    damage fell inside a value) the same call vLLM reads.
    """
    bad = [c for c in reply.tool_calls if not c.ok]
    ok = [(c.name, c.arguments) for c in reply.tool_calls if c.ok]
    theirs, notes = _normalised(answer, ok)
    # A deletion inside a value changes the data, not the structure: such a
    # call is the generated one damaged, and vLLM must read it the same way.
    if all(c in want or c in theirs for c in ok):
        if bad:
            return [*notes, "malformed_reported"]
        same = "error" not in answer and (ok, reply.content) == (theirs, answer["content"])
        return notes if same else [*notes, "malformed_markup"]
    kept = [c for c in want if c[0] in {n for n, _ in ok}]
    if _swallowed(ok, kept):
        return ["value_runs_past_damaged_tag"]
    return [f"unclassified: calls {ok} vs generated {want}"]


def classify(
    reply: Reply, answer: dict[str, Any], *, case: str, want: list[Any] | None = None
) -> list[str]:
    """The policies that explain every difference between tokstream and vLLM.

    ``case`` is ``"complete"`` (a well-formed reply), ``"cut"`` (one cut by the
    end of the reply) or ``"malformed"``. Returns ``[]`` when they agree, and
    ``"unclassified: ..."`` for a difference no policy explains. ``want``:
    the calls a malformed output was made from.
    """
    complete = case != "cut"
    if case == "malformed":
        return _classify_malformed(reply, answer, want or [])
    if "error" in answer:
        if not complete and "waiting for message header" in answer["error"]:
            return ["cut_header_reported"]
        return [f"unclassified: the reference raised {answer['error']}"]
    ok_calls = [(c.name, c.arguments) for c in reply.tool_calls if c.ok]
    cut_calls = [c for c in reply.tool_calls if c.status is ToolCallStatus.UNTERMINATED]
    theirs, found = _normalised(answer, ok_calls)
    full = "".join(s.text for s in reply.segments)
    if not complete and not theirs and "[TOOL_CALLS]" in full:
        before, after = full.split("[TOOL_CALLS]", 1)
        if (reply.content, answer["content"]) == (before, after.strip()):
            return [*found, "cut_list_is_content"]
    if ok_calls != theirs:
        if not complete and cut_calls and theirs[: len(ok_calls)] == ok_calls:
            found.append("cut_call_reported")
        elif not complete and cut_calls and ok_calls and not theirs:
            return ["cut_call_drops_all"]  # and its content is the whole output
        else:
            found.append(f"unclassified: calls {ok_calls} != {theirs}")
    if reply.reasoning != answer["reasoning"]:
        if not complete and reply.thinking_unterminated:
            found.append("cut_reasoning_kept")
        else:
            found.append(f"unclassified: reasoning {reply.reasoning!r} != {answer['reasoning']!r}")
    if reply.content != answer["content"]:
        content, their = reply.content, answer["content"]
        if not their and not content.strip() and ok_calls:
            found.append("whitespace_before_calls")
        elif ok_calls and their == content.strip():
            found.append("content_stripped_with_calls")
        elif len(ok_calls) > 1 and their == content + "\n" * (len(ok_calls) - 1):
            found.append("stream_call_separator_as_content")
        elif len(ok_calls) > 1 and content == their + "\n" * (len(ok_calls) - 1):
            found.append("newlines_between_calls_kept")
        elif not complete and (their.startswith(content) or content.startswith(their)):
            found.append("cut_tag_is_text")
        elif not complete and reply.thinking_unterminated:
            found.append("cut_reasoning_kept")
        else:
            found.append(f"unclassified: content {content!r} != {their!r}")
    return found


Case = tuple[list[int], str, Any]


def _cases(spec: Spec, tok: Tokenizer) -> list[Case]:
    """Well-formed outputs, three of them cut at every position, and malformed variants."""
    generated = samples(spec, 60, seed=1)
    good = [tok.encode(s.text).tolist() for s in generated]
    with_calls = [ids for ids, s in zip(good, generated, strict=True) if s.calls]
    cuts = [p for ids in with_calls[:3] for p in cut(ids)]
    bad = [
        (tok.encode(text).tolist(), s.calls)
        for k, s in enumerate(x for x in generated if x.calls)
        for text in malformed(spec, s, seed=k)
    ]
    return (
        [(ids, "complete", None) for ids in good]
        + [(ids, "cut", None) for ids in cuts]
        + [(ids, "malformed", want) for ids, want in bad]
    )


def _jobs(spec: Spec, tok: Tokenizer, cases: list[Case], home: Path) -> list[dict[str, Any]]:
    stop = tok.token_id(spec.stop)
    base = {
        "tokenizer": str(family_dir(spec.family, home)),
        "tool_parser": spec.vllm_tool,
        "reasoning_parser": spec.vllm_reasoning,
        "tools": TOOLS,
        "chat_template_kwargs": spec.chat_kwargs,
        # vLLM's server never puts the stop token in the text its parser sees.
        "samples": [
            ids[:-1] if spec.strip_stop and ids[-1] == stop else ids for ids, _, _ in cases
        ],
    }
    jobs = [{**base, "stream": False}, {**base, "stream": True}]
    if spec.family == "gpt-oss":  # vLLM's harmony parser, and openai_harmony's own
        jobs = [{**job, "harmony": True} for job in jobs]
        jobs.append({**base, "harmony_direct": True})
    return jobs


@pytest.fixture(scope="module")
def runs(vllm_home: Path) -> dict[str, tuple[Tokenizer, list[Case], list[list[dict[str, Any]]]]]:
    """Every spec's cases and the reference answers, from one vLLM subprocess."""
    plan = {}
    for name, spec in SPECS.items():
        tok = load_family(spec.family, vllm_home)
        cases = _cases(spec, tok)
        plan[name] = (tok, cases, _jobs(spec, tok, cases, vllm_home))
    answers = iter(reference([job for *_, jobs in plan.values() for job in jobs], vllm_home))
    return {
        n: (tok, cases, [next(answers) for _ in jobs]) for n, (tok, cases, jobs) in plan.items()
    }


@pytest.mark.parametrize("name", sorted(SPECS))
def test_against_vllm(name: str, runs: dict[str, Any]) -> None:
    spec = SPECS[name]
    tok, cases, answers = runs[name]
    counts: Counter[str] = Counter()
    unclassified = []
    modes = ("parse", "parse_delta", "harmony")
    for k, (ids, case, want) in enumerate(cases):
        reply = _ours(spec, tok, ids)
        for mode, answer in zip(modes, (a[k] for a in answers), strict=False):
            for found in classify(reply, answer, case=case, want=want):
                counts[f"{mode}: {found.split(':')[0]}"] += 1
                if found.startswith("unclassified"):
                    unclassified.append((mode, tok.decode(ids), found))
    print(f"\n{name}: {len(cases)} outputs; differences by policy: {dict(counts)}")
    kinds = Counter(f"{m}: {f[:60]}" for m, _, f in unclassified)
    assert not unclassified, (kinds.most_common(8), unclassified[:3])
    assert set(POLICIES) >= {k.split(": ")[1] for k in counts}
