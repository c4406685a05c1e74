"""A deterministic, vLLM-shaped ``/v1/completions`` SSE stream for the benchmarks.

Every event is compact JSON as vLLM's pydantic writes it, non-ASCII left as raw
UTF-8, one ``data:`` line ended by a blank line::

    data: {"id":"cmpl-<32 hex>","object":"text_completion","created":1763760000,
           "model":"qwen3-8b","choices":[{"index":0,"text":" Hello","logprobs":null,
           "finish_reason":null,"stop_reason":null,"token_ids":[9707],
           "prompt_token_ids":null}],"usage":null}

* 85% of events carry 1 token ID, 10% carry 2 and 5% carry 3-4 (vLLM merges IDs
  when the detokenizer holds back an incomplete UTF-8 sequence): 1.23 IDs per
  event. About a quarter of the texts are non-ASCII; some need JSON escapes.
* The first event can carry ``prompt_token_ids`` (e.g. 32,768 of them).
* The last token event has ``finish_reason: "length"``; a usage event
  (``choices: []``) and ``data: [DONE]`` follow.
* Token IDs are in ``[200, 151000)``: ordinary (non-special) Qwen tokens, so a
  response parser over the real Qwen tokenizer finds no tags in them.

It does not model logprobs, ``n > 1`` or error events. ``frame()`` frames the
events as uvicorn does in front of vLLM: one HTTP/1.1 chunk per SSE event.
"""

# ruff: noqa: RUF001  (non-ASCII token texts are the point)

from __future__ import annotations

import json
import random
from dataclasses import dataclass

MODEL = "qwen3-8b"
CREATED = 1763760000

_ASCII = [
    " the", " of", " and", " to", " a", " in", " is", " that", " for", " it",
    " with", " as", " was", " on", " be", " by", " this", " are", " or", " from",
    " Hello", " world", " token", " stream", " server", " client", " model",
    "ing", "ed", "ly", "er", "tion", "s", "es", "'s", "n't", ".", ",", ":", ";",
    "!", "?", " (", ")", " -", "\n", "\n\n", "  ", "    ", "\t", ' "', '"',
    "\\", " {", "}", " [", "]", " =", " +", "0", "1", "2", "42", " 2025",
    " def", " return", " import", " async", " await", " self", "_", "__",
    " http", "://", "/v", "1", " JSON", " API", " vLLM", " trio", " httpx",
]  # fmt: skip
_NON_ASCII = [
    "你好", "世界", "的", "是", "在", "了", "一个", "模型", "数据", "。", "，",
    "é", "è", " café", " naïve", " über", "ß", " Zürich", " résumé",
    "日本", "語", "です", "ます", "한국어", " Привет", " мир",
    "🙂", "🚀", "✅", "→", "—", "…", "€", "°C", "µs",
]  # fmt: skip


@dataclass(frozen=True)
class Stream:
    """One generated stream: its SSE events and what a client should count."""

    events: list[bytes]  # each ``data: ...\\n\\n``; the last two are usage and [DONE]
    ids_per_event: list[int]  # token IDs carried by each event (0 for usage, [DONE])
    tokens: int
    text_bytes: int  # UTF-8 bytes of all the texts, concatenated

    @property
    def body_bytes(self) -> int:
        return sum(map(len, self.events))


def generate(n_tokens: int, prompt_len: int = 0, seed: int = 1234) -> Stream:
    """Return a stream of exactly ``n_tokens`` token IDs (deterministic in ``seed``)."""
    rng = random.Random(seed)
    cid = "cmpl-" + "".join(rng.choice("0123456789abcdef") for _ in range(32))
    asc = [(rng.randrange(200, 151000), p) for p in _ASCII]
    non = [(rng.randrange(200, 151000), p) for p in _NON_ASCII]
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    events: list[bytes] = []
    counts: list[int] = []
    text_bytes = 0
    emitted = 0
    while emitted < n_tokens:
        r = rng.random()
        k = min(1 if r < 0.85 else (2 if r < 0.95 else rng.choice((3, 4))), n_tokens - emitted)
        if k == 1:
            tid, text = rng.choice(asc) if rng.random() >= 0.10 else rng.choice(non)
            ids = [tid]
        else:  # several byte-level pieces that only decode together
            text = "".join(rng.choice(non)[1] for _ in range(k - 1))
            ids = [rng.randrange(200, 151000) for _ in range(k)]
        emitted += k
        choice = {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": "length" if emitted >= n_tokens else None,
            "stop_reason": None,
            "token_ids": ids,
            "prompt_token_ids": None,
        }
        if not events and prompt_len:
            choice["prompt_token_ids"] = [rng.randrange(0, 151000) for _ in range(prompt_len)]
        chunk = {
            "id": cid,
            "object": "text_completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [choice],
            "usage": None,
        }
        events.append(b"data: " + dumps(chunk).encode() + b"\n\n")
        counts.append(k)
        text_bytes += len(text.encode())
    prompt_tokens = prompt_len or 12
    usage = {
        "id": cid,
        "object": "text_completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n_tokens,
            "total_tokens": prompt_tokens + n_tokens,
        },
    }
    events.append(b"data: " + dumps(usage).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    counts += [0, 0]
    return Stream(events, counts, n_tokens, text_bytes)


def frame(event: bytes) -> bytes:
    """One HTTP/1.1 chunk holding one SSE event, as uvicorn writes it."""
    return b"%x\r\n%s\r\n" % (len(event), event)


LAST_CHUNK = b"0\r\n\r\n"
