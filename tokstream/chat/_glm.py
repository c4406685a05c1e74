"""GLM-4.5 / 4.6 framing, as their chat template renders a conversation.

``[gMASK]<sop>`` once, then messages opened by a role token and never closed:
``<|system|>\\n``, ``<|user|>\\n``, ``<|assistant|>``, and ``<|observation|>`` for
a run of tool results, each ``\\n<tool_response>\\n...\\n</tool_response>``.
Tool definitions are a ``<|system|>`` block of their own right after
``<sop>`` (one JSON object per line in ``<tools>``). An assistant message is
``\\n<think>REASONING</think>`` (``\\n<think></think>`` without), ``\\n`` and
its stripped content, then each call as ``\\n<tool_call>NAME`` with
``\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>`` pairs (strings as they
are, other values as JSON) and ``\\n</tool_call>``. The generation prompt is
``<|assistant|>``, plus ``\\n<think></think>`` with thinking off. The reply
table is :data:`~tokstream.chat.GLM45`.

A reply ends when the model writes ``<|observation|>`` (it wants tool results)
or ``<|user|>``: that stop token is the next message's opening, so the context
does not write it again (``tokstream.context`` keeps the sampled one).

Where the template is not append-only, and what tokstream does:

* **Dropped reasoning.** Reasoning is rendered only for assistant messages
  after the last user message; a new user message empties the ``<think>``
  block of every earlier one. tokstream keeps what was sampled (and what
  :meth:`GLM45Format.assistant` rendered when it was added).
* **Thinking off** (``enable_thinking=False``) appends ``/nothink`` to *every*
  user message, which tokstream cannot know when it adds one: it renders user
  messages as the template does with thinking on, and only the generation
  prompt's empty ``<think></think>`` for ``thinking=False``. Write
  ``/nothink`` at the end of a user message to get the template's text.
* **Whitespace.** The template strips reasoning and content; sampled text is
  kept as sampled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._exceptions import InvalidRequest
from ..core.parser import ReplyFormat
from ._base import Rendering, Role, Segment
from ._xml_families import GLM45

if TYPE_CHECKING:
    from .._tokenizer import Tokenizer

__all__ = ["GLM45Format"]

_TOOLS_HEAD = (
    "<|system|>\n# Tools\n\nYou may call one or more functions to assist with the user query."
    "\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
)
_TOOLS_TAIL = (
    "</tools>\n\nFor each function call, output the function name and arguments within the "
    "following XML format:\n<tool_call>{function-name}\n<arg_key>{arg-key-1}</arg_key>\n"
    "<arg_value>{arg-value-1}</arg_value>\n<arg_key>{arg-key-2}</arg_key>\n"
    "<arg_value>{arg-value-2}</arg_value>\n...\n</tool_call>"
)


def _tojson(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


class GLM45Format:
    """GLM-4.5 / 4.6 framing (see the module docstring for the rules).

    Args:
        tokenizer: A tokenizer with GLM's ``[gMASK]``, ``<sop>`` and role tokens.

    Raises:
        UnknownTokenError: One of those tokens is missing.
    """

    __slots__ = ("_stops",)

    def __init__(self, tokenizer: Tokenizer) -> None:
        for name in ("[gMASK]", "<sop>", "<|system|>", "<|assistant|>"):
            tokenizer.token_id(name)
        self._stops = tuple(
            tokenizer.token_id(n) for n in ("<|user|>", "<|observation|>", "<|endoftext|>")
        )

    @property
    def name(self) -> str:
        """``"glm45"``."""
        return "glm45"

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """``<|user|>``, ``<|observation|>``, ``<|endoftext|>``."""
        return self._stops

    def preamble(self) -> Rendering:
        """``[gMASK]<sop>``."""
        return Rendering((Segment("framing", "[gMASK]<sop>"),))

    def system(self, content: str | None, tools: Sequence[Mapping[str, Any]] | None) -> Rendering:
        """The tools block, then the system message."""
        segs: list[Segment] = []
        if tools:
            defs = "".join(_tojson(dict(t)) + "\n" for t in tools)
            segs.append(Segment("tools", _TOOLS_HEAD + defs + _TOOLS_TAIL))
        if content is not None:
            segs += [Segment("framing", "<|system|>\n"), Segment("system", content)]
        return Rendering(tuple(segs))

    def message(
        self,
        role: Role,
        content: str,
        *,
        prev_role: Role | None,
        name: str | None = None,
        call_id: str | None = None,
    ) -> Rendering:
        """A user or system message, or a tool result (a run shares one ``<|observation|>``)."""
        if role == "assistant":
            raise InvalidRequest("role", role, "render assistant messages with assistant()")
        if role == "tool":
            body = (
                Segment("framing", "\n<tool_response>\n"),
                Segment("tool", content),
                Segment("framing", "\n</tool_response>"),
            )
            head = () if prev_role == "tool" else (Segment("framing", "<|observation|>"),)
            return Rendering((*head, *body))
        token = "<|user|>" if role == "user" else "<|system|>"
        return Rendering(
            (Segment("framing", token), Segment("framing", "\n"), Segment(role, content))
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
        """History: ``<|assistant|>``, the think block, the stripped content and the calls.

        Reasoning is rendered (the template renders it for a message after the
        last user message, which a message being added always is).

        ``tool_calls`` items are ``{"name", "arguments"}`` or OpenAI-style
        ``{"function": {...}}``; arguments are a mapping (or its JSON text).
        """
        segs = [Segment("framing", "<|assistant|>")]
        if reasoning:
            segs.append(Segment("thinking", f"\n<think>{reasoning.strip()}</think>"))
        else:
            segs.append(Segment("framing", "\n<think></think>"))
        if content.strip():
            segs.append(Segment("text", "\n" + content.strip()))
        for tc in tool_calls or ():
            f = tc.get("function") or tc
            args = f.get("arguments") or {}
            args = json.loads(args) if isinstance(args, str) else args
            pairs = "".join(
                f"\n<arg_key>{k}</arg_key>\n<arg_value>{v if isinstance(v, str) else _tojson(v)}"
                "</arg_value>"
                for k, v in args.items()
            )
            segs.append(Segment("tool_call", f"\n<tool_call>{f['name']}{pairs}\n</tool_call>"))
        return Rendering(tuple(segs))

    def generation_prompt(
        self, *, thinking: bool | None, prev_role: Role | None = None
    ) -> Rendering:
        """``<|assistant|>``, plus ``\\n<think></think>`` when ``thinking=False``."""
        segs = [Segment("framing", "<|assistant|>")]
        if thinking is False:
            segs.append(Segment("framing", "\n<think></think>"))
        return Rendering(tuple(segs))

    def close_reply(self, last_id: int | None) -> Rendering:
        """Nothing: a GLM message has no end; a sampled stop opens the next one."""
        return Rendering(())

    def reply_format(self, tool_format: str | None = None) -> ReplyFormat:
        """:data:`~tokstream.chat.GLM45`.

        Raises:
            InvalidRequest: ``tool_format`` is another name.
        """
        if tool_format not in (None, "glm45"):
            raise InvalidRequest("tool_format", tool_format, "the glm45 format has 'glm45'")
        return GLM45
