"""Llama 3 header framing (``<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>``).

Renders what the Llama 3 Instruct chat template renders: ``<|begin_of_text|>``
once at the start, then one header block per message with its content
``strip()``-ed (the template's ``| trim``), and the generation prompt
``<|start_header_id|>assistant<|end_header_id|>\\n\\n``. The template is
append-only, so there is nothing to retract.

Tool calls and results render as ``llama_models``' ``ChatFormat`` renders them
(Llama 3.1+): a result is an ``ipython`` message, and an assistant message with
calls carries each as ``{"type": "function", "name": ..., "parameters": ...}``
and ends with ``<|eom_id|>``. Deliberately not supported: tool definitions (Llama
3.1 takes them as text its callers write into the system or user message;
``llama_models`` renders none) and reasoning (Llama 3 has none): passing them
raises :class:`~tokstream.InvalidRequest` rather than render something no
reference does. Replies: :data:`LLAMA3` is text up to an end-of-turn token;
:data:`LLAMA3_JSON` (``tool_format="llama3_json"``) also reads JSON calls.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._exceptions import InvalidRequest
from ..core.parser import ReplyFormat, State, decode_hermes
from ._base import LeafKind, Rendering, Role, Segment

if TYPE_CHECKING:
    from .._tokenizer import Tokenizer

__all__ = ["LLAMA3", "LLAMA3_JSON", "Llama3Format"]

LLAMA3 = ReplyFormat("llama3", tags=(), stop_tokens=("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"))
"""Llama 3 replies: text, ended by an end-of-turn token; no tags."""

_JSON_ROWS: tuple[tuple[State, str, State], ...] = (
    # state    tag                leads to
    ("calls",  "{",               "tool_call"),  # the brace starts the call's JSON
    ("calls",  "<|python_tag|>",  "calls"),      # absorbed
    ("text",   "<|python_tag|>",  "calls"),
)  # fmt: skip

LLAMA3_JSON = ReplyFormat(
    "llama3_json",
    _JSON_ROWS,
    ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"),
    decode_hermes,
    call_body="json",
    call_end="json",
    body_tags=frozenset({"{"}),
    initial="calls",
    calls_separators=";",
)
"""Llama 3.1-3.3 JSON tool calls (vLLM ``--tool-call-parser llama3_json``).

A call is a JSON object ``{"name": ..., "parameters": {...}}`` (``"arguments"``
also read) that opens the reply, optionally after ``<|python_tag|>``; it ends
where its JSON balances, with no closing tag, and is handed out right then.
More calls may follow, separated by ``;`` or whitespace. Any other text, at the
start or after the calls, is content (vLLM keeps text before the first call
only when there is no call at all, and drops text after calls); whitespace
before the first call or between calls is framing. A ``{`` later in content is
text. ``<|python_tag|>`` followed by code (the built-in code interpreter) is
content, not a call."""


class Llama3Format:
    """Llama 3 Instruct framing.

    Args:
        tokenizer: A tokenizer with ``<|begin_of_text|>``, ``<|start_header_id|>``,
            ``<|end_header_id|>`` and ``<|eot_id|>``.

    Raises:
        UnknownTokenError: One of those tokens is missing.
    """

    __slots__ = ("_ends", "_eom")

    _BEGIN = "<|begin_of_text|>"
    _HEAD = ("<|start_header_id|>", "<|end_header_id|>")
    _EOT = "<|eot_id|>"
    _EOM = "<|eom_id|>"
    _TOOL_END = "<|eot_id|>"  # what ends a tool result
    _NAME = "llama3"

    def __init__(self, tokenizer: Tokenizer) -> None:
        for name in (self._BEGIN, *self._HEAD):
            tokenizer.token_id(name)
        ends = [tokenizer.token_id(self._EOT)]
        added = tokenizer.added_tokens
        self._eom = added.get(self._EOM)
        ends += [added[n] for n in (self._EOM, "<|end_of_text|>") if n in added]
        self._ends = tuple(ends)

    @property
    def name(self) -> str:
        """``"llama3"``."""
        return self._NAME

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """End of turn (plus end of message / ``<|end_of_text|>`` when present)."""
        return self._ends

    def _header(self, role: str) -> Segment:
        return Segment("framing", f"{self._HEAD[0]}{role}{self._HEAD[1]}\n\n")

    def preamble(self) -> Rendering:
        """``<|begin_of_text|>``."""
        return Rendering((Segment("framing", self._BEGIN),))

    def system(self, content: str | None, tools: Sequence[Mapping[str, Any]] | None) -> Rendering:
        """Render the first system message (tools are not supported)."""
        if tools:
            raise InvalidRequest(
                "tools",
                f"{len(tools)} definitions",
                f"the {self._NAME} chat format renders no tool definitions",
            )
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
        """Render one header block; the content is stripped, as the template's ``trim``.

        A tool result is an ``ipython`` message, as Llama 3.1 names the role.
        """
        kind: LeafKind = "text" if role == "assistant" else role
        end = self._TOOL_END if role == "tool" else self._EOT
        return Rendering(
            (
                self._header("ipython" if role == "tool" else role),
                Segment(kind, content.strip()),
                Segment("framing", end),
            )
        )

    def _call_text(self, name: str, arguments: Any) -> str:
        """One call, as ``llama_models``' ``ToolUtils.encode_tool_call`` writes it (JSON)."""
        return json.dumps({"type": "function", "name": name, "parameters": arguments})

    def assistant(
        self,
        content: str,
        *,
        reasoning: str | None,
        tool_calls: Sequence[Mapping[str, Any]] | None,
        current_turn: bool,
        prev_role: Role | None = None,
    ) -> Rendering:
        """Render an assistant message from text; tool calls as ``llama_models`` does.

        Each call follows the content, and the message then ends with the end of
        message token (the model expects a tool result). As ``llama_models``,
        the content and each call are tokenized apart.
        """
        if reasoning:
            raise InvalidRequest(
                "reasoning", reasoning, f"the {self._NAME} chat format renders no reasoning"
            )
        if not tool_calls:
            return self.message("assistant", content, prev_role=None)
        if self._eom is None:
            raise InvalidRequest("tool_calls", tool_calls, f"this tokenizer has no {self._EOM}")
        segs = [self._header("assistant")]
        if content.strip():
            segs.append(Segment("text", content.strip()))
        for tc in tool_calls:
            f = tc.get("function") or tc
            args = f["arguments"]
            args = json.loads(args) if isinstance(args, str) else args
            segs.append(Segment("tool_call", self._call_text(f["name"], args)))
        segs.append(Segment("framing", self._EOM))
        return Rendering(tuple(segs), split=True)

    def generation_prompt(
        self, *, thinking: bool | None, prev_role: Role | None = None
    ) -> Rendering:
        """The assistant header (``thinking`` is ignored)."""
        return Rendering((self._header("assistant"),))

    def close_reply(self, last_id: int | None) -> Rendering:
        """Nothing after a sampled end-of-turn ID, else the end of turn."""
        return Rendering(() if last_id in self._ends else (Segment("framing", self._EOT),))

    def reply_format(self, tool_format: str | None = None) -> ReplyFormat:
        """:data:`LLAMA3` (text up to ``<|eot_id|>`` / ``<|eom_id|>`` /
        ``<|end_of_text|>``), or :data:`LLAMA3_JSON` for ``"llama3_json"``.

        Raises:
            InvalidRequest: Another ``tool_format``.
        """
        if tool_format in (None, "llama3"):
            return LLAMA3
        if tool_format == "llama3_json":
            return LLAMA3_JSON
        raise InvalidRequest("tool_format", tool_format, "the llama3 chat format has llama3_json")
