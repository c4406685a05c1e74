"""Save and restore the context tree as plain JSON data, exactly.

The format (version 1)::

    {"version": 1, "chat_format": "qwen",
     "messages": [{"role": "user", "name": null, "content": "...",
                   "leaves": [{"kind": "framing", "text": "...", "ids": [...],
                               "sampled": false, "logprobs": null | [float | null, ...]}]}],
     "close": [{"kind": "framing", "text": "<|im_end|>\n", "ids": [...]}],
     "session_id": "..."}

``close`` is the last message's held closing framing (tokenized, not yet in the
prompt; see ``tokstream._context``); it may be absent, as may ``session_id`` (the
router key; a fresh one is made when absent). IDs are stored, never
re-encoded on load. Logprobs round-trip exactly (float32
values survive a trip through JSON doubles); unknown ones are ``null``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .._exceptions import ContextError
from ..chat._base import LEAF_KINDS, ROLES
from ._nodes import Leaf, Message
from ._tape import _NAN, _as_ids, _as_lp, _Held

if TYPE_CHECKING:
    from .._tokenizer import Tokenizer
    from ._tape import _Tape

VERSION = 1


def _leaf(x: Leaf) -> dict[str, Any]:
    lp = x.logprobs
    return {
        "kind": x.kind,
        "text": x.text,
        "ids": x.ids.tolist(),
        "sampled": x.sampled,
        "logprobs": None if lp is None else [None if v != v else v for v in lp.tolist()],
    }


def dump(messages: Iterable[Message], close: _Held, chat_format: str) -> dict[str, Any]:
    """Return the JSON-ready dict for these messages and the held closing framing."""
    return {
        "version": VERSION,
        "chat_format": chat_format,
        "messages": [
            {
                "role": m.role,
                "name": m.name,
                "content": m.content,
                "leaves": [_leaf(x) for x in m._leaves],
            }
            for m in messages
        ],
        "close": [{"kind": k, "text": t, "ids": ids.tolist()} for k, t, ids in close],
    }


def format_name(data: object) -> str:
    """Return the saved chat-format name, checking the version."""
    if not isinstance(data, Mapping) or data.get("version") != VERSION:
        raise ContextError(f"not a saved context (a dict with version {VERSION} expected)")
    name = data.get("chat_format")
    if not isinstance(name, str):
        raise ContextError("not a saved context: no chat_format name")
    return name


def load(data: Mapping[str, Any], tape: _Tape, tokenizer: Tokenizer) -> tuple[list[Message], _Held]:
    """Append the saved leaves to ``tape``; return the rebuilt messages and held close."""
    out: list[Message] = []
    try:
        for m in data["messages"]:
            if m["role"] not in ROLES:
                raise ContextError(f"unknown role {m['role']!r}")
            message = Message(m["role"], tape, m.get("name"), m.get("content"))
            for x in m["leaves"]:
                if x["kind"] not in LEAF_KINDS:
                    raise ContextError(f"unknown leaf kind {x['kind']!r}")
                ids = _as_ids(x["ids"]) if x["ids"] else np.zeros(0, dtype=np.int32)
                raw = x.get("logprobs")
                lp = None if raw is None else [_NAN if v is None else v for v in raw]
                lps = _as_lp(lp, len(ids))
                sampled = x["sampled"]
                if not isinstance(sampled, bool) or not isinstance(x["text"], str):
                    raise ContextError(f"bad leaf {x!r}: sampled must be bool, text str")
                start = tape.n
                tape.append(ids, sampled, lps)
                message._leaves.append(
                    Leaf(
                        tape,
                        tokenizer,
                        x["kind"],
                        sampled,
                        start,
                        tape.n,
                        x["text"],
                        lps is not None,
                    )
                )
            out.append(message)
        close: _Held = ()
        for x in data.get("close") or ():
            if x["kind"] != "framing" or not isinstance(x["text"], str) or not x["ids"]:
                raise ContextError(f"bad closing framing {x!r}: framing text and IDs expected")
            close += ((x["kind"], x["text"], _as_ids(x["ids"])),)
    except (KeyError, TypeError) as exc:
        raise ContextError(f"not a saved context: missing or bad field ({exc!r})") from exc
    return out, close
