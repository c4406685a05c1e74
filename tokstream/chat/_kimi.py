"""Kimi K2 framing, as Kimi K2 Thinking's chat template renders a conversation.

Every message is ``<|im_ROLE|>NAME<|im_middle|>...<|im_end|>``: ``<|im_system|>``
for system and tool messages, ``<|im_user|>user``, ``<|im_assistant|>assistant``.
Tool definitions come first, as ``<|im_system|>tool_declare<|im_middle|>`` and
the tools' JSON; a conversation without a system message gets Kimi's default
one. An assistant message is ``<think>REASONING</think>``, its content, and its
calls in a ``<|tool_calls_section_begin|>`` section, each
``<|tool_call_begin|>ID<|tool_call_argument_begin|>{json}<|tool_call_end|>``
(the ID is Kimi's ``functions.NAME:IDX``). A tool result is
``## Return of ID\\n`` and the result, in a ``<|im_system|>`` message named by
the tool's name (else ``tool``). The generation prompt is
``<|im_assistant|>assistant<|im_middle|>``; the model opens ``<think>`` itself.
The reply table is :data:`~tokstream.chat.KIMI_K2`.

Where the template is not append-only, and what tokstream does:

* **Dropped reasoning.** The template keeps ``<think>REASONING</think>`` only
  for assistant messages after the last one without calls; any earlier one,
  and that last final answer itself, get an empty ``<think></think>``. So a
  final answer drops its own reasoning and that of every tool-calling message
  before it. :meth:`KimiK2Format.assistant` renders what the template renders
  for the message while it is the last one (reasoning with calls, an empty
  block without), and tokstream keeps every sampled ID as sampled.
* **The first message.** The default system message is rendered before a first
  message that is not a system message (the template writes it as long as
  ``messages[0]`` is not one).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._exceptions import InvalidRequest
from ..core.parser import ReplyFormat
from ._base import Rendering, Role, Segment
from ._xml_families import KIMI_K2

if TYPE_CHECKING:
    from .._tokenizer import Tokenizer

__all__ = ["KIMI_DEFAULT_SYSTEM", "KimiK2Format"]

KIMI_DEFAULT_SYSTEM = "You are Kimi, an AI assistant created by Moonshot AI."
"""The system message the template writes when the conversation has none."""

_END = Segment("framing", "<|im_end|>")


def _tojson(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _system(content: str) -> tuple[Segment, ...]:
    return (
        Segment("framing", "<|im_system|>system<|im_middle|>"),
        Segment("system", content),
        _END,
    )


class KimiK2Format:
    """Kimi K2 framing (see the module docstring for the rules).

    Args:
        tokenizer: A tokenizer with Kimi's ``<|im_user|>``, ``<|im_assistant|>``,
            ``<|im_system|>``, ``<|im_middle|>`` and ``<|im_end|>``.

    Raises:
        UnknownTokenError: One of those tokens is missing.
    """

    __slots__ = ("_ends",)

    def __init__(self, tokenizer: Tokenizer) -> None:
        for name in ("<|im_user|>", "<|im_assistant|>", "<|im_system|>", "<|im_middle|>"):
            tokenizer.token_id(name)
        ends = [tokenizer.token_id("<|im_end|>")]
        if "[EOS]" in tokenizer.added_tokens:
            ends.append(tokenizer.added_tokens["[EOS]"])
        self._ends = tuple(ends)

    @property
    def name(self) -> str:
        """``"kimi_k2"``."""
        return "kimi_k2"

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """``<|im_end|>`` (and ``[EOS]``)."""
        return self._ends

    def preamble(self) -> Rendering:
        """Nothing (the first message brings the default system message if needed)."""
        return Rendering(())

    def system(self, content: str | None, tools: Sequence[Mapping[str, Any]] | None) -> Rendering:
        """The tool declaration, then the system message (Kimi's default without content)."""
        segs: list[Segment] = []
        if tools:
            segs += [
                Segment("framing", "<|im_system|>tool_declare<|im_middle|>"),
                Segment("tools", _tojson([dict(t) for t in tools])),
                _END,
            ]
        if content is None and not tools:
            return Rendering(())
        return Rendering((*segs, *_system(KIMI_DEFAULT_SYSTEM if content is None else content)))

    def message(
        self,
        role: Role,
        content: str,
        *,
        prev_role: Role | None,
        name: str | None = None,
        call_id: str | None = None,
    ) -> Rendering:
        """A user turn, a tool result (``call_id`` needed) or a later system message."""
        if role == "assistant":
            raise InvalidRequest("role", role, "render assistant messages with assistant()")
        if role == "system":
            return Rendering(_system(content))
        first = _system(KIMI_DEFAULT_SYSTEM) if prev_role is None else ()
        if role == "user":
            head = Segment("framing", "<|im_user|>user<|im_middle|>")
            return Rendering((*first, head, Segment("user", content), _END))
        if not call_id:
            raise InvalidRequest(
                "call_id",
                call_id,
                "Kimi K2 tool results name the call they answer (## Return of "
                "functions.NAME:IDX): pass call_id=call.call_id to add_tool()",
            )
        result = f"<|im_system|>{name or 'tool'}<|im_middle|>## Return of {call_id}\n"
        return Rendering((*first, Segment("framing", result), Segment("tool", content), _END))

    def assistant(
        self,
        content: str,
        *,
        reasoning: str | None,
        tool_calls: Sequence[Mapping[str, Any]] | None,
        current_turn: bool,
        prev_role: Role | None = None,
    ) -> Rendering:
        """History: ``<think>`` (reasoning only with calls), content, calls, ``<|im_end|>``.

        ``tool_calls`` items are OpenAI-style ``{"id", "function": {"name",
        "arguments"}}`` (or ``{"id", "name", "arguments"}``); ``id`` is Kimi's
        ``functions.NAME:IDX``. String arguments are written verbatim.

        Raises:
            InvalidRequest: A call has no ``id``.
        """
        think = reasoning or "" if tool_calls else ""
        segs = [
            Segment("framing", "<|im_assistant|>assistant<|im_middle|>"),
            Segment("thinking" if think else "framing", f"<think>{think}</think>"),
        ]
        if content:
            segs.append(Segment("text", content))
        if tool_calls:
            calls = []
            for tc in tool_calls:
                f = tc.get("function") or tc
                if not tc.get("id"):
                    raise InvalidRequest(
                        "tool_calls", tc, "a Kimi K2 call needs its id (functions.NAME:IDX)"
                    )
                args = f["arguments"]
                args_text = args if isinstance(args, str) else _tojson(args)
                calls.append(
                    f"<|tool_call_begin|>{tc['id']}<|tool_call_argument_begin|>"
                    f"{args_text}<|tool_call_end|>"
                )
            body = "".join(calls)
            section = f"<|tool_calls_section_begin|>{body}<|tool_calls_section_end|>"
            segs.append(Segment("tool_call", section))
        segs.append(_END)
        return Rendering(tuple(segs))

    def generation_prompt(
        self, *, thinking: bool | None, prev_role: Role | None = None
    ) -> Rendering:
        """``<|im_assistant|>assistant<|im_middle|>`` (``thinking`` is ignored)."""
        return Rendering((Segment("framing", "<|im_assistant|>assistant<|im_middle|>"),))

    def close_reply(self, last_id: int | None) -> Rendering:
        """Nothing after a sampled ``<|im_end|>`` / ``[EOS]``, else ``<|im_end|>``."""
        return Rendering(() if last_id in self._ends else (_END,))

    def reply_format(self, tool_format: str | None = None) -> ReplyFormat:
        """:data:`~tokstream.chat.KIMI_K2`.

        Raises:
            InvalidRequest: ``tool_format`` is another name.
        """
        if tool_format not in (None, "kimi_k2"):
            raise InvalidRequest("tool_format", tool_format, "the kimi_k2 format has 'kimi_k2'")
        return KIMI_K2
