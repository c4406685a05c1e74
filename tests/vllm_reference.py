"""The reference side of the differential tests: vLLM's own parsers, run in vLLM's venv.

Not a test module. ``tests/reference.py`` runs this file with the CPU vLLM
venv's Python (``.vllm/venv``, which ``make test`` installs), feeding one JSON
job on stdin and reading one JSON answer from stdout. It imports vLLM and
nothing of tokstream, so the answer is what vLLM itself makes of each output.

The input is a list of jobs; the output is the list of their answers. A job:
``{"tokenizer": DIR, "tool_parser": NAME, "reasoning_parser": NAME|null,
"tools": [...], "chat_template_kwargs": {...}, "prompt_ids": [...],
"samples": [[id, ...], ...], "stream": bool}``. For each sample it answers
``{"reasoning", "content", "calls": [[name, arguments_json], ...]}`` from
``Parser.parse`` on the decoded text (``stream=false``), or from
``Parser.parse_delta`` fed one token at a time (``stream=true``), deltas joined.
A parser that raises is answered ``{"error": repr}``.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any


def _calls_from_deltas(deltas: list[Any]) -> list[list[str]]:
    calls: dict[int, list[str]] = {}
    for tc in deltas:
        slot = calls.setdefault(tc.index, ["", ""])
        if tc.function is not None:
            slot[0] += tc.function.name or ""
            slot[1] += tc.function.arguments or ""
    return [calls[i] for i in sorted(calls)]


def harmony_direct(job: dict[str, Any]) -> list[dict[str, Any]]:
    """openai_harmony's own StreamableParser, token by token, then end of stream."""
    import openai_harmony as h

    enc = h.load_harmony_encoding(h.HarmonyEncodingName.HARMONY_GPT_OSS)
    out = []
    for ids in job["samples"]:
        parser = h.StreamableParser(enc, role=h.Role.ASSISTANT)
        try:
            for i in ids:
                parser.process(i)
            parser.process_eos()
        except Exception as exc:
            out.append({"error": repr(exc)})
            continue
        reasoning, content, calls = [], [], []
        for msg in parser.messages:
            text = "".join(c.text for c in msg.content)
            if msg.recipient and msg.recipient != "assistant":
                calls.append([msg.recipient.removeprefix("functions."), text])
            elif msg.channel == "analysis":
                reasoning.append(text)
            else:
                content.append(text)
        out.append({"reasoning": "".join(reasoning), "content": "".join(content), "calls": calls})
    return out


def _deltas(tok: Any, ids: list[int]) -> list[str]:
    """The text each token adds, as vLLM's detokenizer would stream it."""
    out, prev = [], ""
    for k in range(len(ids)):
        text = tok.decode(ids[: k + 1], skip_special_tokens=False)
        if text.endswith("\ufffd") and k + 1 < len(ids):
            out.append("")
        else:
            out.append(text[len(prev) :])
            prev = text
    return out


def bench_job(job: dict[str, Any], tok: Any, cls: Any, request: Any) -> list[dict[str, Any]]:
    """µs per token of ``parse_delta`` alone (deltas are detokenized beforehand)."""
    import time

    kwargs = job.get("chat_template_kwargs") or {}
    prepared = [(ids, _deltas(tok, ids)) for ids in job["samples"]]
    best = float("inf")
    n = sum(len(ids) for ids, _ in prepared)
    for _ in range(job.get("runs", 3)):
        total = 0.0
        for ids, deltas in prepared:
            try:
                parser = cls(tok, request.tools, chat_template_kwargs=kwargs)
            except TypeError:
                parser = cls(tok, request.tools)
            last = len(ids) - 1
            prompt = job.get("prompt_ids") or []
            t0 = time.perf_counter()
            for k, tid in enumerate(ids):
                parser.parse_delta(deltas[k], [tid], request, prompt, finished=k == last)
            total += time.perf_counter() - t0
        best = min(best, total)
    return [{"us_per_token": best / n * 1e6, "tokens": n}]


def run_job(job: dict[str, Any]) -> list[dict[str, Any]]:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.parser.parser_manager import ParserManager
    from vllm.tokenizers import get_tokenizer

    if job.get("harmony_direct"):
        return harmony_direct(job)
    harmony = job.get("harmony", False)
    tok = get_tokenizer(job["tokenizer"])
    tools = job.get("tools") or None
    kwargs = job.get("chat_template_kwargs") or {}
    request = ChatCompletionRequest(
        model="reference",
        messages=[{"role": "user", "content": "x"}],
        tools=tools,
        tool_choice="auto" if tools else "none",
        chat_template_kwargs=kwargs or None,
    )
    cls = ParserManager.get_parser(
        tool_parser_name=job["tool_parser"],
        reasoning_parser_name=job.get("reasoning_parser"),
        enable_auto_tools=True,
        is_harmony=harmony,
    )
    assert cls is not None
    if job.get("bench"):
        return bench_job(job, tok, cls, request)
    out = []
    for ids in job["samples"]:
        try:
            parser = cls(tok, request.tools, chat_template_kwargs=kwargs)
        except TypeError:
            parser = cls(tok, request.tools)
        try:
            if job.get("stream"):
                reasoning, content, deltas = [], [], []
                prev = ""
                n = len(ids)
                for k in range(n):
                    text = tok.decode(ids[: k + 1], skip_special_tokens=False)
                    if text.endswith("\ufffd") and k + 1 < n:
                        delta = ""
                    else:
                        delta, prev = text[len(prev) :], text
                    msg = parser.parse_delta(
                        delta,
                        [ids[k]],
                        request,
                        prompt_token_ids=job.get("prompt_ids") or [],
                        finished=k + 1 == n,
                    )
                    if msg is None:
                        continue
                    reasoning.append(msg.reasoning or "")
                    content.append(msg.content or "")
                    deltas.extend(msg.tool_calls or [])
                out.append(
                    {
                        "reasoning": "".join(reasoning),
                        "content": "".join(content),
                        "calls": _calls_from_deltas(deltas),
                    }
                )
            else:
                text = tok.decode(ids, skip_special_tokens=False)
                reasoning_text, content_text, calls = parser.parse(
                    text, request, enable_auto_tools=True, model_output_token_ids=ids
                )
                out.append(
                    {
                        "reasoning": reasoning_text or "",
                        "content": content_text or "",
                        "calls": [[c.name, c.arguments] for c in calls or ()],
                    }
                )
        except Exception as exc:
            out.append({"error": repr(exc)})
    return out


def main() -> None:
    logging.disable(logging.CRITICAL)
    jobs = json.load(sys.stdin)
    json.dump([run_job(job) for job in jobs], sys.stdout)


if __name__ == "__main__":
    main()
