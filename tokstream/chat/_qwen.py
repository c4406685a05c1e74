"""ChatML framing as Qwen2.5 / Qwen3 templates render it (``<|im_start|>role\\n...<|im_end|>\\n``).

Renders system (with tool definitions in ``<tools></tools>``), user, assistant
(thinking, text, Hermes-style ``<tool_call>`` JSON), tool results (wrapped in
``<tool_response>`` inside a ``user`` turn), and the generation prompt with
thinking on or off, exactly as the Qwen3 template (and the tiny test model's
``tokenizer_config.json``) does under Hugging Face's jinja settings
(``tojson`` = ``json.dumps(ensure_ascii=False)``).

Where the Qwen3 template is **not** append-only, and what tokstream does:

* **Consecutive tool results** share one ``user`` turn: the template closes it
  (``<|im_end|>\\n``) only after the last one. A tool result renders that
  framing as :attr:`~tokstream.chat.Rendering.close`; the next tool result
  retracts it, and the context writes it only when something else follows (the
  generation prompt included). So a prompt holds exactly the template's
  rendering of the messages so far, and between tool results it ends at
  ``</tool_response>``, the part no later message changes.
* **Dropped reasoning.** The template renders an assistant's ``<think>`` block
  only for messages after the last user query: a new user message erases the
  reasoning of every earlier turn. tokstream keeps every sampled ID verbatim
  (and reasoning rendered by :meth:`QwenFormat.assistant` once added), so each
  prompt extends the previous one exactly: prefix caching works, and training
  sees what was sampled.
* **The last assistant message.** While an assistant message without reasoning
  is the *last* message after a user query, the template gives it an empty
  ``<think>\\n\\n</think>\\n\\n``, which disappears once anything follows.
  :meth:`QwenFormat.assistant` renders the continued form (no empty block).
* **Thinking off** (``enable_thinking=False``) puts that empty block in the
  generation prompt; the template drops it when the reply is no longer last.
  tokstream keeps it: the next prompt holds exactly what the model saw.
* **Whitespace.** The template re-renders reasoning with ``strip('\\n')`` and
  content with ``lstrip('\\n')``; sampled newlines there are kept as sampled.
* **Non-canonical sampling.** A model may sample a token split that re-encoding
  the text would not produce (e.g. ``"<th" "ink" ">"``); the template would
  re-tokenize it differently. tokstream keeps the sampled IDs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._base import LeafKind, Rendering, Role, Segment

if TYPE_CHECKING:
    import numpy.typing as npt

    from .._tokenizer import Tokenizer

__all__ = ["QwenFormat"]

_TOOLS_HEAD = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
_END = Segment("framing", "<|im_end|>\n")


def _tojson(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


class QwenFormat:
    """ChatML / Qwen2.5 / Qwen3 framing (see the module docstring for the rules).

    Args:
        tokenizer: A tokenizer with ``<|im_start|>`` and ``<|im_end|>``; the
            ``<think>``/``<tool_call>`` tags are used when present.

    Raises:
        UnknownTokenError: The tokenizer has no ``<|im_start|>`` / ``<|im_end|>``.
    """

    __slots__ = (
        "_eot",
        "_im_end",
        "_tags",
        "_think_close",
        "_think_open",
        "_tool_close",
        "_tool_open",
    )

    def __init__(self, tokenizer: Tokenizer) -> None:
        tokenizer.token_id("<|im_start|>")
        self._im_end = tokenizer.token_id("<|im_end|>")
        added = tokenizer.added_tokens
        self._think_open = added.get("<think>", -1)
        self._think_close = added.get("</think>", -1)
        self._tool_open = added.get("<tool_call>", -1)
        self._tool_close = added.get("</tool_call>", -1)
        eot = [self._im_end]
        if "<|endoftext|>" in added:
            eot.append(added["<|endoftext|>"])
        self._eot = frozenset(eot)
        tags = [self._think_open, self._think_close, self._tool_open, self._tool_close]
        self._tags = np.array([t for t in tags if t >= 0], dtype=np.int32)

    @property
    def name(self) -> str:
        """``"qwen"``."""
        return "qwen"

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """``(<|im_end|>,)``."""
        return (self._im_end,)

    def preamble(self) -> Rendering:
        """Nothing: ChatML has no BOS."""
        return Rendering(())

    def system(self, content: str | None, tools: Sequence[Mapping[str, Any]] | None) -> Rendering:
        """Render the first system message; tool definitions go after its content."""
        if tools:
            segs = [Segment("framing", "<|im_start|>system\n")]
            if content is not None:
                segs.append(Segment("system", content + "\n\n"))
            defs = "".join("\n" + _tojson(dict(t)) for t in tools)
            segs += [Segment("tools", _TOOLS_HEAD + defs + _TOOLS_TAIL), _END]
            return Rendering(tuple(segs))
        if content is None:
            return Rendering(())
        return self.message("system", content, prev_role=None)

    def message(self, role: Role, content: str, *, prev_role: Role | None) -> Rendering:
        """Render a user, tool-result or later system message."""
        if role == "tool":
            body = (
                Segment("framing", "\n<tool_response>\n"),
                Segment("tool", content),
                Segment("framing", "\n</tool_response>"),
            )
            if prev_role == "tool":
                return Rendering(body, retract=(_END,), close=(_END,))
            return Rendering((Segment("framing", "<|im_start|>user"), *body), close=(_END,))
        if role == "assistant":
            raise ValueError("render assistant messages with assistant()")
        return Rendering(
            (Segment("framing", f"<|im_start|>{role}\n"), Segment(role, content), _END)
        )

    def assistant(
        self,
        content: str,
        *,
        reasoning: str | None,
        tool_calls: Sequence[Mapping[str, Any]] | None,
        current_turn: bool,
    ) -> Rendering:
        """Render an assistant message from text, as the template renders history.

        Reasoning (``reasoning``, or a ``<think>...</think>`` prefix of
        ``content`` when ``reasoning`` is ``None``) is rendered only when the
        message is in the current turn (after the last user query), as Qwen3
        does. ``tool_calls`` items are ``{"name", "arguments"}`` or OpenAI-style
        ``{"function": {"name", "arguments"}}``; string arguments are inserted
        verbatim, others as JSON.
        """
        if reasoning is None:
            reasoning = ""
            if "</think>" in content:
                reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1]
                reasoning = reasoning.lstrip("\n")
                content = content.split("</think>")[-1].lstrip("\n")
        segs = [Segment("framing", "<|im_start|>assistant\n")]
        if current_turn and reasoning:
            segs.append(Segment("thinking", "<think>\n" + reasoning.strip("\n") + "\n</think>"))
            segs.append(Segment("text", "\n\n" + content.lstrip("\n")))
        elif content:
            segs.append(Segment("text", content))
        for i, tc in enumerate(tool_calls or ()):
            f = tc.get("function") or tc
            args = f["arguments"]
            if i > 0 or content:
                segs.append(Segment("text", "\n"))
            args_text = args if isinstance(args, str) else _tojson(args)
            call = '<tool_call>\n{"name": "' + f["name"] + '", "arguments": ' + args_text
            segs.append(Segment("tool_call", call + "}\n</tool_call>"))
        segs.append(_END)
        return Rendering(tuple(segs))

    def generation_prompt(self, *, thinking: bool | None) -> Rendering:
        """``<|im_start|>assistant\\n``, plus an empty think block when ``thinking=False``."""
        segs = [Segment("framing", "<|im_start|>assistant\n")]
        if thinking is False:
            segs.append(Segment("framing", "<think>\n\n</think>\n\n"))
        return Rendering(tuple(segs))

    def close_reply(self, last_id: int | None) -> Rendering:
        """``\\n`` after a sampled ``<|im_end|>``, else ``<|im_end|>\\n``."""
        if last_id == self._im_end:
            return Rendering((Segment("framing", "\n"),))
        return Rendering((_END,))

    def split_reply(self, ids: npt.NDArray[np.int32]) -> list[tuple[LeafKind, int, int]]:
        """Split sampled IDs at the tag IDs into thinking / text / tool_call / stop leaves.

        A ``</think>`` before any other tag closes thinking the prompt opened.
        A ``<tool_call>`` ends thinking. A final ``<|im_end|>`` or
        ``<|endoftext|>`` becomes a ``stop`` leaf.
        """
        n = len(ids)
        end = n - 1 if n and int(ids[-1]) in self._eot else n
        out: list[tuple[LeafKind, int, int]] = []
        state: LeafKind = "text"
        pos = 0
        seen_tag = False

        def emit(kind: LeafKind, start: int, stop: int) -> None:
            if stop > start:
                out.append((kind, start, stop))

        for p in np.flatnonzero(np.isin(ids[:end], self._tags)).tolist():
            t = int(ids[p])
            if t == self._think_open and state == "text":
                emit("text", pos, p)
                pos, state = p, "thinking"
            elif t == self._think_close and (state == "thinking" or not seen_tag):
                emit("thinking", pos, p + 1)
                pos, state = p + 1, "text"
            elif t == self._tool_open and state != "tool_call":
                emit(state, pos, p)
                pos, state = p, "tool_call"
            elif t == self._tool_close and state == "tool_call":
                emit("tool_call", pos, p + 1)
                pos, state = p + 1, "text"
            seen_tag = True
        emit(state, pos, end)
        if end < n:
            out.append(("stop", end, n))
        return out
