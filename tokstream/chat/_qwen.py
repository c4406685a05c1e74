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

The reply side is a table: :data:`QWEN_TAGS` (``<think>`` and ``<tool_call>``
blocks, as vLLM's ``qwen3`` reasoning parser and ``hermes`` /
``qwen3_coder`` tool parsers read them) and :data:`QWEN_STOPS`, with the Hermes
or Qwen3-Coder call decoder: :data:`HERMES` and :data:`QWEN3_CODER`, registered
by those names for ``ResponseParser(tool_format=...)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._exceptions import InvalidRequest
from ..core.parser import ReplyFormat, State, decode_hermes, decode_qwen3_coder
from ._base import Rendering, Role, Segment

if TYPE_CHECKING:
    from .._tokenizer import Tokenizer

__all__ = ["HERMES", "QWEN3_CODER", "QWEN_STOPS", "QWEN_TAGS", "QwenFormat"]

QWEN_TAGS: tuple[tuple[State, str, State], ...] = (
    # state       tag             leads to
    ("text",      "<think>",      "thinking"),
    ("text",      "<tool_call>",  "tool_call"),
    ("thinking",  "<think>",      "thinking"),    # redundant: absorbed
    ("thinking",  "</think>",     "text"),
    ("thinking",  "<tool_call>",  "tool_call"),   # a call ends thinking implicitly
    ("tool_call", "</tool_call>", "text"),
    ("tool_call", "<tool_call>",  "tool_call"),   # the open call is unterminated
)  # fmt: skip
"""Qwen's reply blocks: ``<think>...</think>`` and ``<tool_call>...</tool_call>``."""

QWEN_STOPS = ("<|im_end|>", "<|endoftext|>")
"""What ends a Qwen reply: the end of turn, or the EOS from ``generation_config``."""

HERMES = ReplyFormat("hermes", QWEN_TAGS, QWEN_STOPS, decode_hermes, call_body="json")
"""Qwen2.5 / Qwen3 / Hermes: a JSON object per call."""

QWEN3_CODER = ReplyFormat("qwen3_coder", QWEN_TAGS, QWEN_STOPS, decode_qwen3_coder)
"""Qwen3-Coder: ``<function=NAME><parameter=P>...`` markup per call."""

_REPLY_FORMATS = {f.name: f for f in (HERMES, QWEN3_CODER)}

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

    __slots__ = ("_im_end",)

    def __init__(self, tokenizer: Tokenizer) -> None:
        tokenizer.token_id("<|im_start|>")
        self._im_end = tokenizer.token_id("<|im_end|>")

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

    def message(
        self,
        role: Role,
        content: str,
        *,
        prev_role: Role | None,
        name: str | None = None,
        call_id: str | None = None,
    ) -> Rendering:
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
            raise InvalidRequest("role", role, "render assistant messages with assistant()")
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
        prev_role: Role | None = None,
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

    def generation_prompt(
        self, *, thinking: bool | None, prev_role: Role | None = None
    ) -> Rendering:
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

    def reply_format(self, tool_format: str | None = None) -> ReplyFormat:
        """:data:`HERMES` (the default, as this format renders tools) or :data:`QWEN3_CODER`.

        Raises:
            InvalidRequest: ``tool_format`` is neither.
        """
        fmt = _REPLY_FORMATS.get("hermes" if tool_format is None else tool_format)
        if fmt is None:
            raise InvalidRequest(
                "tool_format",
                tool_format,
                f"the qwen chat format supports {sorted(_REPLY_FORMATS)}",
            )
        return fmt
