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
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tokstream._tokenizer import Tokenizer
from tokstream.core.parser import Reply, ToolCallStatus, parse_output

from .families import family_dir, load_family, reference
from .format_samples import TOOLS, Spec, cut, opens_thinking, samples
from .format_specs import SPECS

pytestmark = pytest.mark.vllm

POLICIES: dict[str, str] = {
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
    "vllm_stream_loses_text": (
        "vLLM wrong (streaming): parse_delta drops or reorders text that parse() keeps"
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


def classify(reply: Reply, answer: dict[str, Any], *, complete: bool, stream: bool) -> list[str]:
    """The policies that explain every difference between tokstream and vLLM.

    Returns ``[]`` when they agree, and ``"unclassified: ..."`` for a
    difference no policy explains.
    """
    if "error" in answer:
        if not complete and "waiting for message header" in answer["error"]:
            return ["cut_header_reported"]
        return [f"unclassified: the reference raised {answer['error']}"]
    found: list[str] = []
    ok_calls = [(c.name, c.arguments) for c in reply.tool_calls if c.ok]
    cut_calls = [c for c in reply.tool_calls if c.status is ToolCallStatus.UNTERMINATED]
    theirs = _theirs_calls(answer)
    if ok_calls != theirs:
        if not complete and cut_calls and theirs[: len(ok_calls)] == ok_calls:
            found.append("cut_call_reported")
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
        elif not complete and (their.startswith(content) or content.startswith(their)):
            found.append("cut_tag_is_text")
        elif not complete and reply.thinking_unterminated:
            found.append("cut_reasoning_kept")
        else:
            found.append(f"unclassified: content {content!r} != {their!r}")
    return found


@pytest.mark.parametrize("name", sorted(SPECS))
def test_against_vllm(name: str, vllm_home: Path) -> None:
    spec = SPECS[name]
    directory = family_dir(spec.family, vllm_home)
    tok = load_family(spec.family, vllm_home)
    good = [tok.encode(s.text).tolist() for s in samples(spec, 60, seed=1)]
    with_calls = [ids for ids, s in zip(good, samples(spec, 60, seed=1), strict=True) if s.calls]
    cuts = [p for ids in with_calls[:3] for p in cut(ids)]
    cases = [(ids, True) for ids in good] + [(ids, False) for ids in cuts]
    stop = tok.token_id(spec.stop)
    base = {
        "tokenizer": str(directory),
        "tool_parser": spec.vllm_tool,
        "reasoning_parser": spec.vllm_reasoning,
        "tools": TOOLS,
        "chat_template_kwargs": spec.chat_kwargs,
        # vLLM's server never puts the stop token in the text its parser sees.
        "samples": [ids[:-1] if spec.strip_stop and ids[-1] == stop else ids for ids, _ in cases],
    }
    jobs = [{**base, "stream": False}, {**base, "stream": True}]
    if spec.family == "gpt-oss":  # vLLM's harmony parser, and openai_harmony's own
        jobs = [{**job, "harmony": True} for job in jobs]
        jobs.append({**base, "harmony_direct": True})
    answers = reference(jobs, vllm_home)
    counts: Counter[str] = Counter()
    unclassified = []
    modes = ("parse", "parse_delta", "harmony")
    for k, (ids, complete) in enumerate(cases):
        reply = _ours(spec, tok, ids)
        for mode, answer in zip(modes, (a[k] for a in answers), strict=False):
            for found in classify(reply, answer, complete=complete, stream=mode != "parse"):
                counts[f"{mode}: {found.split(':')[0]}"] += 1
                if found.startswith("unclassified"):
                    unclassified.append((mode, tok.decode(ids), found))
    print(f"\n{name}: {len(cases)} outputs; differences by policy: {dict(counts)}")
    kinds = Counter(f"{m}: {f[:60]}" for m, _, f in unclassified)
    assert not unclassified, (kinds.most_common(8), unclassified[:3])
    assert set(POLICIES) >= {k.split(": ")[1] for k in counts}
