"""MiniMax M2 framing, as its chat template renders a conversation.

``]~!b[]~b]system\\n``, the system message (MiniMax's default without one) and
the tool definitions (``<tool>{json}</tool>`` lines and the call format), then
``[e~[\\n``. Each message is ``]~b]ROLE\\n...[e~[\\n`` (the assistant's role is
``ai``); a run of tool results shares one ``]~b]tool`` message of
``\\n<response>...</response>`` parts. An assistant message is
``<think>\\nREASONING\\n</think>\\n\\n``, its content, and its calls as
``\\n<minimax:tool_call>\\n<invoke name="NAME">\\n`` then
``<parameter name="K">V</parameter>\\n`` lines (strings as they are, other
values as JSON) and ``</invoke>\\n`` per call, then ``</minimax:tool_call>``.
The generation prompt ``]~b]ai\\n<think>\\n`` opens the thinking block, so the
reply's parser starts in it. The reply table is :data:`~tokstream.chat.MINIMAX_M2`.

The reference is the template as llama.cpp stores it with Unsloth's fixes
(``tests/data/templates/minimax_m2_unsloth.jinja``; MiniMax's own file is on
Hugging Face only), whose markup is MiniMax's.

Where the template is not append-only, and what tokstream does:

* **Consecutive tool results** share one message, closed by ``[e~[\\n`` only
  after the last one: a result holds that close (:attr:`Rendering.close`) and
  the next result retracts it, as Qwen's do. Results are joined by
  ``</response>\\n<response>``, where BPE merges ``>\\n``: so a result's last
  ``>`` is held with the close, and between results a prompt ends at
  ``</response``.
* **Dropped reasoning.** Reasoning is rendered only for assistant messages
  after the last user message; tokstream keeps what was sampled or rendered.
* **Later system messages** are not rendered by the template at all (only the
  first message can be the system message): tokstream raises
  :class:`~tokstream.InvalidRequest` rather than drop text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._exceptions import InvalidRequest
from ..core.parser import ReplyFormat
from ._base import Rendering, Role, Segment
from ._xml_families import MINIMAX_M2

if TYPE_CHECKING:
    from .._tokenizer import Tokenizer

__all__ = ["MINIMAX_DEFAULT_SYSTEM", "MiniMaxM2Format"]

MINIMAX_DEFAULT_SYSTEM = "You are a helpful assistant."
"""The system message the template writes when the conversation has none."""

_TOOLS_HEAD = (
    "\n\n# Tools\nYou may call one or more tools to assist with the user query.\n"
    "Here are the tools available in JSONSchema format:\n\n<tools>\n"
)
_TOOLS_TAIL = (
    "</tools>\n\nWhen making tool calls, use XML format to invoke tools and pass parameters:\n"
    '\n<minimax:tool_call>\n<invoke name="tool-name-1">\n'
    '<parameter name="param-key-1">param-value-1</parameter>\n'
    '<parameter name="param-key-2">param-value-2</parameter>\n...\n</invoke>\n'
    "</minimax:tool_call>"
)
_END = Segment("framing", "[e~[\n")
_RESULT_END = (Segment("framing", ">[e~[\n"),)


def _tojson(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


class MiniMaxM2Format:
    """MiniMax M2 framing (see the module docstring for the rules).

    Args:
        tokenizer: A tokenizer with MiniMax's ``]~!b[``, ``]~b]`` and ``[e~[``.

    Raises:
        UnknownTokenError: One of those tokens is missing.
    """

    __slots__ = ("_end",)

    def __init__(self, tokenizer: Tokenizer) -> None:
        for name in ("]~!b[", "]~b]"):
            tokenizer.token_id(name)
        self._end = tokenizer.token_id("[e~[")

    @property
    def name(self) -> str:
        """``"minimax_m2"``."""
        return "minimax_m2"

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """``([e~[,)``."""
        return (self._end,)

    def preamble(self) -> Rendering:
        """Nothing (the first message brings the system block)."""
        return Rendering(())

    def _system(self, content: str | None, tools: Sequence[Mapping[str, Any]] | None) -> Rendering:
        segs = [
            Segment("framing", "]~!b[]~b]system\n"),
            Segment("system", MINIMAX_DEFAULT_SYSTEM if content is None else content),
        ]
        if tools:
            defs = "".join(f"<tool>{_tojson(dict(t.get('function', t)))}</tool>\n" for t in tools)
            segs.append(Segment("tools", _TOOLS_HEAD + defs + _TOOLS_TAIL))
        return Rendering((*segs, _END))

    def system(self, content: str | None, tools: Sequence[Mapping[str, Any]] | None) -> Rendering:
        """The system block: content (MiniMax's default without), then the tools."""
        if content is None and not tools:
            return Rendering(())
        return self._system(content, tools)

    def message(
        self,
        role: Role,
        content: str,
        *,
        prev_role: Role | None,
        name: str | None = None,
        call_id: str | None = None,
    ) -> Rendering:
        """A user turn or a tool result (a run of results shares one message)."""
        if role == "assistant":
            raise InvalidRequest("role", role, "render assistant messages with assistant()")
        if role == "system":
            raise InvalidRequest(
                "role", role, "MiniMax M2 renders only a first system message: use add_system()"
            )
        first = self._system(None, None).segments if prev_role is None else ()
        if role == "tool":
            # A result's ">" goes with what follows it: the ">\n" before the
            # next result is one token, and a message may not end inside it.
            body = (Segment("tool", content), Segment("framing", "</response"))
            if prev_role == "tool":
                opening = Segment("framing", ">\n<response>")
                return Rendering((opening, *body), retract=_RESULT_END, close=_RESULT_END)
            opening = Segment("framing", "]~b]tool\n<response>")
            return Rendering((*first, opening, *body), close=_RESULT_END)
        head = Segment("framing", "]~b]user\n")
        return Rendering((*first, head, Segment("user", content), _END))

    def assistant(
        self,
        content: str,
        *,
        reasoning: str | None,
        tool_calls: Sequence[Mapping[str, Any]] | None,
        current_turn: bool,
        prev_role: Role | None = None,
    ) -> Rendering:
        """History: ``]~b]ai\\n``, the think block (the template renders reasoning for
        a message after the last user message, as one being added is), content,
        calls, ``[e~[\\n``.

        ``tool_calls`` items are ``{"name", "arguments"}`` or OpenAI-style
        ``{"function": {...}}``; arguments are a mapping (or its JSON text).
        """
        segs = [Segment("framing", "]~b]ai\n")]
        if reasoning:
            segs.append(Segment("thinking", f"<think>\n{reasoning}\n</think>\n\n"))
        if content:
            segs.append(Segment("text", content))
        if tool_calls:
            invokes = []
            for tc in tool_calls:
                f = tc.get("function") or tc
                args = f.get("arguments") or {}
                args = json.loads(args) if isinstance(args, str) else args
                params = "".join(
                    f'<parameter name="{k}">{v if isinstance(v, str) else _tojson(v)}</parameter>\n'
                    for k, v in args.items()
                )
                invokes.append(f'<invoke name="{f["name"]}">\n{params}</invoke>\n')
            calls = "".join(invokes)
            segs.append(Segment("tool_call", f"\n<minimax:tool_call>\n{calls}</minimax:tool_call>"))
        segs.append(_END)
        return Rendering(tuple(segs))

    def generation_prompt(
        self, *, thinking: bool | None, prev_role: Role | None = None
    ) -> Rendering:
        """``]~b]ai\\n<think>\\n``: the reply starts inside the thinking block."""
        return Rendering((Segment("framing", "]~b]ai\n"), Segment("framing", "<think>\n")))

    def close_reply(self, last_id: int | None) -> Rendering:
        """``\\n`` after a sampled ``[e~[``, else ``[e~[\\n``."""
        if last_id == self._end:
            return Rendering((Segment("framing", "\n"),))
        return Rendering((_END,))

    def reply_format(self, tool_format: str | None = None) -> ReplyFormat:
        """:data:`~tokstream.chat.MINIMAX_M2`.

        Raises:
            InvalidRequest: ``tool_format`` is another name.
        """
        if tool_format not in (None, "minimax_m2"):
            raise InvalidRequest(
                "tool_format", tool_format, "the minimax_m2 format has 'minimax_m2'"
            )
        return MINIMAX_M2
