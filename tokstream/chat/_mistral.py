"""Mistral: its reply tables (pre-v11 and v11+ tool calls) and its chat framing.

* :data:`MISTRAL` (``tool_format="mistral"``, Tekken up to v7): ``[TOOL_CALLS]``
  opens a section holding a JSON list of calls,
  ``[{"name": ..., "arguments": {...}, "id": ...}, ...]`` (a bare object is
  read too). The list's ``[``, ``,`` and ``]`` are framing; each object is a
  call that ends where its JSON balances, and is handed out right then, not at
  the list's close. Text after ``]`` is content.
* :data:`MISTRAL_V11` (``tool_format="mistral_v11"``, Tekken v11 and later):
  each call is ``[TOOL_CALLS]NAME[ARGS]{json}`` (v11 puts ``[CALL_ID]ID``
  before ``[ARGS]``); the header is routed by ``core.parser.route_mistral``,
  and the call ends where its JSON arguments balance. v13's
  ``[THINK]...[/THINK]`` is reasoning.

``</s>`` ends the reply. The ID a call carries (``"id"``, ``[CALL_ID]``) is
its ``call_id``.

Where tokstream differs from vLLM's ``mistral`` parser, on purpose: text after
the calls is content (vLLM drops it, or keeps only text before the first
``[TOOL_CALLS]``), and a call whose JSON is broken is reported with its status
and raw text (vLLM turns the output into content).

:class:`MistralFormat` frames a conversation as ``mistral_common``'s
``MistralTokenizer.encode_chat_completion`` does, for Tekken tokenizer
versions v3, v7, v11 and v13 (the version's instruct encoder in
``mistral_common.tokens.tokenizers.instruct``):

* ``<s>``, then ``[SYSTEM_PROMPT]...[/SYSTEM_PROMPT]`` where a system message is
  (v7+), ``[INST]user[/INST]``, an assistant's content (right spaces stripped)
  and calls then ``</s>``, and tool results: v3
  ``[TOOL_RESULTS]{"content": ..., "call_id": ...}[/TOOL_RESULTS]``, v7 / v11
  ``[TOOL_RESULTS]ID[TOOL_CONTENT]...[/TOOL_RESULTS]``, v13
  ``[TOOL_RESULTS]...[/TOOL_RESULTS]``. Calls are written as the version's
  model writes them (a JSON list up to v7, ``[TOOL_CALLS]NAME[ARGS]{...}``
  from v11, with ``[CALL_ID]ID`` in v11). There is no generation prompt: the
  reply follows ``[/INST]`` or ``[/TOOL_RESULTS]``. v13 reasoning is
  ``[THINK]...[/THINK]``; other versions render none (it raises).
* Tool definitions are ``[AVAILABLE_TOOLS][...][/AVAILABLE_TOOLS]`` right
  before a user message's ``[INST]``: v13 puts them before the first user
  message, which is append-only.

Where the encoder is not append-only, and what tokstream does instead:

* **Tools (v3 to v11) and the system prompt (v3)** are rendered before (v3:
  inside) the *last* user message, so each new user message moves them.
  tokstream renders them where the encoder does while the first user message
  is the last one, right before it, and keeps them there: the conversation up
  to the first reply and its tool loop is token-exact; after a second user
  message the prompt keeps them in place (and the second ``[INST]`` has none),
  so each prompt extends the previous one. v3 has a single system prompt (a
  later one raises :class:`~tokstream.InvalidRequest`).
* **Content and calls in one history message** raise in v3, as the encoder
  does; a sampled reply that has both is kept as sampled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .._exceptions import InvalidRequest
from ..core.parser import ReplyFormat, State, decode_harmony_arguments, decode_hermes, route_mistral
from ._base import Rendering, Role, Segment

if TYPE_CHECKING:
    from .._tokenizer import Tokenizer

__all__ = ["MISTRAL", "MISTRAL_V11", "MistralFormat"]

MistralVersion = Literal["v3", "v7", "v11", "v13"]

_STOPS = ("</s>",)

_LIST_ROWS: tuple[tuple[State, str, State], ...] = (
    # state    tag             leads to
    ("text",   "[TOOL_CALLS]", "calls"),
    ("calls",  "[TOOL_CALLS]", "calls"),      # repeated: absorbed
    ("calls",  "[",            "calls"),      # the list opens: framing
    ("calls",  "{",            "tool_call"),  # the brace starts the call's JSON
    ("calls",  "]",            "text"),       # the list closes
)  # fmt: skip

MISTRAL = ReplyFormat(
    "mistral",
    _LIST_ROWS,
    _STOPS,
    decode_hermes,
    call_body="json",
    call_end="json",
    body_tags=frozenset({"{"}),
    calls_separators=",",
)
"""Pre-v11 Mistral calls: ``[TOOL_CALLS][{...}, {...}]`` (vLLM ``--tool-call-parser mistral``
with a tokenizer that has no ``[ARGS]``)."""

_V11_ROWS: tuple[tuple[State, str, State], ...] = (
    # state       tag             leads to
    ("text",      "[THINK]",      "thinking"),
    ("thinking",  "[THINK]",      "thinking"),  # redundant: absorbed
    ("thinking",  "[/THINK]",     "text"),
    ("text",      "[TOOL_CALLS]", "header"),
    ("thinking",  "[TOOL_CALLS]", "header"),    # a call ends thinking implicitly
    ("header",    "[ARGS]",       "routed"),
)  # fmt: skip

MISTRAL_V11 = ReplyFormat(
    "mistral_v11",
    _V11_ROWS,
    _STOPS,
    decode_harmony_arguments,
    call_body="json",
    route_header=route_mistral,
    call_end="json",
)
"""v11+ Mistral calls: ``[TOOL_CALLS]NAME[ARGS]{...}`` (vLLM ``--tool-call-parser mistral``
with a tokenizer that has ``[ARGS]``; ``[THINK]`` reasoning as its ``mistral``
reasoning parser reads it)."""


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _tool_json(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A tool definition as ``mistral_common``'s ``Tool.model_dump()`` writes it."""
    fn = tool.get("function", tool)
    return {
        "type": "function",
        "function": {
            "name": fn["name"],
            "description": fn.get("description") or "",
            "parameters": dict(fn.get("parameters") or {}),
        },
    }


def _arguments(fn: Mapping[str, Any]) -> Any:
    """A call's arguments as the encoder reads them: JSON text is parsed."""
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            return json.loads(args)
        except ValueError:
            return args
    return args


_EOS = Segment("framing", "</s>")


class MistralFormat:
    """Mistral Tekken framing, as ``mistral_common`` encodes a chat (module docstring).

    Args:
        tokenizer: A Tekken tokenizer (``<s>``, ``</s>``, ``[INST]``...).
        version: The tokenizer version (``"v3"``, ``"v7"``, ``"v11"``,
            ``"v13"``). Default: ``"v13"`` if the tokenizer has ``[THINK]``,
            ``"v11"`` if it has ``[ARGS]``, else ``"v3"`` (a v7 Tekken file has
            the same control tokens as v3: pass ``version="v7"``).

    Raises:
        UnknownTokenError: The tokenizer lacks a control token of the version.
        InvalidRequest: An unknown ``version``.
    """

    __slots__ = ("_eos", "_version")

    def __init__(self, tokenizer: Tokenizer, *, version: MistralVersion | None = None) -> None:
        added = tokenizer.added_tokens
        if version is None:
            version = "v13" if "[THINK]" in added else "v11" if "[ARGS]" in added else "v3"
        if version not in ("v3", "v7", "v11", "v13"):
            raise InvalidRequest("version", version, "use 'v3', 'v7', 'v11' or 'v13'")
        self._version: MistralVersion = version
        names = ["<s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[TOOL_RESULTS]"]
        names += ["[ARGS]"] if version in ("v11", "v13") else []
        for name in names:
            tokenizer.token_id(name)
        self._eos = tokenizer.token_id("</s>")

    @property
    def name(self) -> str:
        """``"mistral"``."""
        return "mistral"

    @property
    def version(self) -> MistralVersion:
        """The tokenizer version this format encodes."""
        return self._version

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """``(</s>,)``."""
        return (self._eos,)

    def preamble(self) -> Rendering:
        """``<s>``."""
        return Rendering((Segment("framing", "<s>"),))

    def system(self, content: str | None, tools: Sequence[Mapping[str, Any]] | None) -> Rendering:
        """The system prompt and the tool definitions, right before the first ``[INST]``.

        v3 opens the first user turn here (``[INST]SYSTEM\n\n``): the next
        user message must follow.
        """
        segs: list[Segment] = []
        if content is not None and self._version != "v3":
            segs += [
                Segment("framing", "[SYSTEM_PROMPT]"),
                Segment("system", content),
                Segment("framing", "[/SYSTEM_PROMPT]"),
            ]
        if tools:
            defs = _dumps([_tool_json(t) for t in tools])
            segs += [
                Segment("framing", "[AVAILABLE_TOOLS]"),
                Segment("tools", defs),
                Segment("framing", "[/AVAILABLE_TOOLS]"),
            ]
        if self._version == "v3" and (segs or content is not None):
            segs.append(Segment("framing", "[INST]"))
            if content is not None:
                segs.append(Segment("system", content + "\n\n"))
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
        """A user turn, a tool result (``call_id`` needed up to v11) or a later system prompt."""
        version = self._version
        if role == "assistant":
            raise InvalidRequest("role", role, "render assistant messages with assistant()")
        if role == "system":
            if version == "v3":
                raise InvalidRequest(
                    "role", role, "Mistral v3 has one system prompt: give it to add_system()"
                )
            return Rendering(
                (
                    Segment("framing", "[SYSTEM_PROMPT]"),
                    Segment("system", content),
                    Segment("framing", "[/SYSTEM_PROMPT]"),
                )
            )
        if role == "user":
            opened = version == "v3" and prev_role == "system"  # system() opened [INST]
            head = () if opened else (Segment("framing", "[INST]"),)
            return Rendering((*head, Segment("user", content), Segment("framing", "[/INST]")))
        if version != "v13" and not call_id:
            raise InvalidRequest(
                "call_id",
                call_id,
                f"Mistral {version} tool results name the call they answer: pass "
                "call_id=call.call_id (the ToolCall's ID) to add_tool()",
            )
        if version == "v3":
            try:
                value: Any = json.loads(content)
            except ValueError:
                value = content
            body: tuple[Segment, ...] = (
                Segment("tool", _dumps({"content": value, "call_id": call_id})),
            )
        elif version == "v13":
            body = (Segment("tool", content),)
        else:
            body = (
                Segment("framing", f"{call_id}[TOOL_CONTENT]"),
                Segment("tool", content),
            )
        return Rendering(
            (Segment("framing", "[TOOL_RESULTS]"), *body, Segment("framing", "[/TOOL_RESULTS]"))
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
        """History: ``[THINK]reasoning[/THINK]`` (v13), content, the calls, ``</s>``.

        ``tool_calls`` items are ``{"name", "arguments", "id"}`` or OpenAI-style
        ``{"id", "function": {"name", "arguments"}}``.

        Raises:
            InvalidRequest: Reasoning before v13; content and calls together in v3.
        """
        version = self._version
        if reasoning and version != "v13":
            raise InvalidRequest("reasoning", reasoning, f"Mistral {version} renders no reasoning")
        if content and tool_calls and version == "v3":
            raise InvalidRequest(
                "tool_calls", tool_calls, "Mistral v3 renders content or calls, not both"
            )
        segs: list[Segment] = []
        if reasoning:
            segs.append(Segment("thinking", "[THINK]" + reasoning + "[/THINK]"))
            if content:
                segs.append(Segment("text", content))
        elif content:
            segs.append(Segment("text", content.rstrip(" ")))
        calls = [(tc, tc.get("function") or tc) for tc in tool_calls or ()]
        if calls and version in ("v3", "v7"):
            items = []
            for tc, fn in calls:
                item: dict[str, Any] = {"name": fn["name"], "arguments": _arguments(fn)}
                if tc.get("id") and tc["id"] != "null":
                    item["id"] = tc["id"]
                items.append(item)
            segs.append(Segment("tool_call", "[TOOL_CALLS]" + _dumps(items)))
        for tc, fn in calls if version in ("v11", "v13") else ():
            call_id = tc.get("id") if version == "v11" else None
            head = f"[TOOL_CALLS]{fn['name']}" + (f"[CALL_ID]{call_id}" if call_id else "")
            segs.append(Segment("tool_call", head + "[ARGS]" + _dumps(_arguments(fn))))
        segs.append(_EOS)
        return Rendering(tuple(segs))

    def generation_prompt(
        self, *, thinking: bool | None, prev_role: Role | None = None
    ) -> Rendering:
        """Nothing: the reply follows ``[/INST]`` or ``[/TOOL_RESULTS]``."""
        return Rendering(())

    def close_reply(self, last_id: int | None) -> Rendering:
        """Nothing after a sampled ``</s>``, else ``</s>``."""
        return Rendering(() if last_id == self._eos else (_EOS,))

    def reply_format(self, tool_format: str | None = None) -> ReplyFormat:
        """:data:`MISTRAL` up to v7, :data:`MISTRAL_V11` from v11 (or the one named).

        Raises:
            InvalidRequest: ``tool_format`` is another name.
        """
        formats = {"mistral": MISTRAL, "mistral_v11": MISTRAL_V11}
        default = "mistral_v11" if self._version in ("v11", "v13") else "mistral"
        fmt = formats.get(tool_format or default)
        if fmt is None:
            raise InvalidRequest(
                "tool_format", tool_format, f"the mistral chat format supports {sorted(formats)}"
            )
        return fmt
