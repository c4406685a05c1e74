"""OpenAI harmony (gpt-oss): its reply table and its chat framing.

:data:`GPT_OSS` reads a reply as vLLM's ``openai`` parser and
``openai_harmony``'s ``StreamableParser`` do: every message is a header
(``<|start|>assistant`` or ``<|channel|>`` up to ``<|message|>``) routed by
``core.parser.route_harmony``, then a body. ``analysis`` is reasoning;
``final`` and ``commentary`` without a recipient (a preamble) are content; a
recipient (``to=functions.get_weather``) makes the body a call's JSON
arguments, closed by ``<|call|>``. ``<|end|>`` ends a message, ``<|return|>``
the reply. The header's tokens are the start of its block's segment, so a
call's IDs are its whole harmony message.

Where tokstream differs from those parsers, on purpose: contents of several
messages are concatenated as written (vLLM joins them with ``\\n``); a call to a
built-in recipient (``browser.search``, ``python``) is a call named as written
(vLLM ignores it); a ``<|start|>`` inside a body starts a new message (harmony
reads it as text).

:class:`HarmonyFormat` frames a conversation as ``openai_harmony``'s
``render_conversation`` does: a system message (identity, knowledge cutoff,
reasoning effort, channels), a developer message (``# Instructions`` and the
tools as a TypeScript namespace), ``<|start|>user<|message|>...<|end|>``, tool
results as ``<|start|>functions.NAME<|channel|>commentary to=assistant...``,
and the generation prompt ``<|start|>assistant``. Tool schemas are rendered
as harmony renders them for objects, strings (with ``enum``), numbers,
integers, booleans, arrays, type lists, ``nullable``, ``default``,
``title``, ``description`` and ``examples``; a schema using ``oneOf`` raises
:class:`~tokstream.InvalidRequest` rather than render something else.

Where ``render_conversation`` is not append-only, tokstream keeps what was
sampled:

* it renders a finished reply's last message with ``<|end|>`` in place of the
  ``<|return|>`` the model sampled;
* once the last assistant message is ``final``, it drops the ``analysis``
  messages before the first ``final`` one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .._exceptions import InvalidRequest
from ..core.parser import (
    ReplyFormat,
    State,
    decode_harmony_arguments,
    route_harmony,
)
from ._base import Rendering, Role, Segment

if TYPE_CHECKING:
    from .._tokenizer import Tokenizer

__all__ = ["GPT_OSS", "HarmonyFormat", "harmony_tools_typescript"]

_ROWS: tuple[tuple[State, str, State], ...] = (
    # state       tag              leads to
    ("text",      "<|start|>",     "header"),
    ("text",      "<|channel|>",   "header"),
    ("thinking",  "<|start|>",     "header"),    # an analysis message without <|end|>
    ("tool_call", "<|start|>",     "header"),    # a call without <|call|>: unterminated
    ("header",    "<|message|>",   "routed"),
    ("thinking",  "<|end|>",       "text"),
    ("text",      "<|end|>",       "text"),      # absorbed: ends a final/preamble message
    ("tool_call", "<|call|>",      "text"),
    ("tool_call", "<|end|>",       "text"),
)  # fmt: skip

GPT_OSS = ReplyFormat(
    "harmony",
    _ROWS,
    ("<|return|>",),
    decode_harmony_arguments,
    call_body="json",
    route_header=route_harmony,
)
"""gpt-oss replies (vLLM's ``--tool-call-parser openai``, ``--reasoning-parser openai_gptoss``)."""

IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."


def _default(value: Any, enum: bool) -> str:
    if isinstance(value, str):
        return value if enum else f'"{value}"'
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _ts(schema: Mapping[str, Any], indent: str) -> str:
    """A JSON schema as harmony's TypeScript type (see the module docstring)."""
    if "oneOf" in schema:
        raise InvalidRequest("tools", schema, "the harmony chat format renders no oneOf schemas")
    kind = schema.get("type")
    if isinstance(kind, list):
        names = ["number" if t == "integer" else t for t in kind if isinstance(t, str)]
        if names:
            return " | ".join(names)
    if not isinstance(kind, str):
        return "any"
    if kind == "object":
        out = f"{indent}// {schema['description']}\n" if "description" in schema else ""
        out += "{\n"
        required = set(schema.get("required") or ())
        for key, val in (schema.get("properties") or {}).items():
            if "oneOf" in val:
                raise InvalidRequest("tools", val, "the harmony chat format renders no oneOf")
            if "title" in val:
                out += f"{indent}// {val['title']}\n{indent}//\n"
            if "description" in val:
                out += f"{indent}// {val['description']}\n"
            examples = [e for e in val.get("examples") or () if isinstance(e, str)]
            if val.get("examples"):
                out += f"{indent}// Examples:\n" + "".join(
                    f'{indent}// - "{e}"\n' for e in examples
                )
            text = _ts(val, indent + "    ")
            if val.get("nullable") is True and "null" not in text:
                text += " | null"
            out += f"{indent}{key}{'' if key in required else '?'}: {text},"
            if "default" in val:
                out += f" // default: {_default(val['default'], bool(val.get('enum')))}"
            out += "\n"
        return out + indent + "}"
    if kind == "string":
        enum = [f'"{v}"' for v in schema.get("enum") or () if isinstance(v, str)]
        return " | ".join(enum) if enum else "string"
    if kind in ("number", "integer"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "array":
        items = schema.get("items")
        return f"{_ts(items, indent)}[]" if isinstance(items, Mapping) else "Array<any>"
    return "any"


def harmony_tools_typescript(tools: Sequence[Mapping[str, Any]]) -> str:
    """The ``# Tools`` section harmony renders for function tools (OpenAI-style dicts).

    Raises:
        InvalidRequest: A tool has no name, or a schema uses ``oneOf``.
    """
    lines = ["## functions\n", "namespace functions {\n"]
    for tool in tools:
        fn = tool.get("function", tool)
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("tools", tool, "a tool definition needs a function name")
        lines += [f"// {line}" for line in str(fn.get("description") or "").splitlines()]
        params = fn.get("parameters")
        signature = f"(_: {_ts(params, '')})" if params is not None else "()"
        lines.append(f"type {name} = {signature} => any;\n")
    lines.append("} // namespace functions")
    return "# Tools\n\n" + "\n".join(lines)


def _tool_author(name: str | None) -> str:
    if not name:
        raise InvalidRequest("name", name, "a harmony tool result needs the tool's name")
    return name if "." in name else f"functions.{name}"


class HarmonyFormat:
    """gpt-oss framing as ``openai_harmony.render_conversation`` renders it.

    Args:
        tokenizer: The gpt-oss tokenizer (o200k harmony).
        reasoning_effort: ``"low"``, ``"medium"`` (harmony's default) or ``"high"``.
        knowledge_cutoff: The system message's cutoff line (harmony's default).
        current_date: The system message's ``Current date:`` line, if any.

    Raises:
        UnknownTokenError: The tokenizer lacks a harmony token.
        InvalidRequest: An unknown ``reasoning_effort``.
    """

    __slots__ = ("_call", "_cutoff", "_date", "_effort", "_return")

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        reasoning_effort: Literal["low", "medium", "high"] = "medium",
        knowledge_cutoff: str = "2024-06",
        current_date: str | None = None,
    ) -> None:
        for name in ("<|start|>", "<|message|>", "<|channel|>", "<|end|>", "<|constrain|>"):
            tokenizer.token_id(name)
        self._return = tokenizer.token_id("<|return|>")
        self._call = tokenizer.token_id("<|call|>")
        if reasoning_effort not in ("low", "medium", "high"):
            raise InvalidRequest("reasoning_effort", reasoning_effort, "use low, medium or high")
        self._effort = reasoning_effort
        self._cutoff = knowledge_cutoff
        self._date = current_date

    @property
    def name(self) -> str:
        """``"harmony"``."""
        return "harmony"

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """``<|return|>`` and ``<|call|>`` (harmony's stops for assistant actions)."""
        return (self._return, self._call)

    def preamble(self) -> Rendering:
        """Nothing: the system message is rendered with the first message."""
        return Rendering(())

    def _system_message(self, tools: bool) -> Segment:
        top = [IDENTITY, f"Knowledge cutoff: {self._cutoff}"]
        if self._date:
            top.append(f"Current date: {self._date}")
        channels = (
            "# Valid channels: analysis, commentary, final. "
            "Channel must be included for every message."
        )
        if tools:
            channels += "\nCalls to these tools must go to the commentary channel: 'functions'."
        text = "\n\n".join(["\n".join(top), f"Reasoning: {self._effort}", channels])
        return Segment("framing", f"<|start|>system<|message|>{text}<|end|>")

    def system(self, content: str | None, tools: Sequence[Mapping[str, Any]] | None) -> Rendering:
        """The system message, then a developer message with instructions and tools."""
        segs = [self._system_message(bool(tools))]
        if content is not None or tools:
            segs.append(Segment("framing", "<|start|>developer<|message|>"))
            if content is not None:
                segs.append(Segment("system", "# Instructions\n\n" + content))
            if tools:
                sep = "\n\n" if content is not None else ""
                segs.append(Segment("tools", sep + harmony_tools_typescript(tools)))
            segs.append(Segment("framing", "<|end|>"))
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
        """A user or later system (developer) message, or a tool result (``name`` needed)."""
        if role == "assistant":
            raise InvalidRequest("role", role, "render assistant messages with assistant()")
        if role == "tool":
            head = f"<|start|>{_tool_author(name)}<|channel|>commentary to=assistant<|message|>"
        else:
            head = f"<|start|>{'developer' if role == 'system' else role}<|message|>"
        return Rendering(
            (Segment("framing", head), Segment(role, content), Segment("framing", "<|end|>"))
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
        """History: an ``analysis`` message for ``reasoning``, the content (``final``,
        or a ``commentary`` preamble before calls), then one message per call."""
        segs: list[Segment] = []
        if reasoning:
            segs += [
                Segment("framing", "<|start|>assistant<|channel|>analysis<|message|>"),
                Segment("thinking", reasoning),
                Segment("framing", "<|end|>"),
            ]
        if content:
            channel = "commentary" if tool_calls else "final"
            segs += [
                Segment("framing", f"<|start|>assistant<|channel|>{channel}<|message|>"),
                Segment("text", content),
                Segment("framing", "<|end|>"),
            ]
        for tc in tool_calls or ():
            f = tc.get("function") or tc
            args = f["arguments"]
            args_text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
            head = (
                f"<|start|>assistant<|channel|>commentary to={_tool_author(f['name'])}"
                " <|constrain|>json<|message|>"
            )
            segs.append(Segment("tool_call", head + args_text + "<|call|>"))
        return Rendering(tuple(segs))

    def generation_prompt(
        self, *, thinking: bool | None, prev_role: Role | None = None
    ) -> Rendering:
        """``<|start|>assistant`` (reasoning effort is the system message's)."""
        return Rendering((Segment("framing", "<|start|>assistant"),))

    def close_reply(self, last_id: int | None) -> Rendering:
        """Nothing after a sampled ``<|return|>`` or ``<|call|>``, else ``<|end|>``."""
        if last_id in (self._return, self._call):
            return Rendering(())
        return Rendering((Segment("framing", "<|end|>"),))

    def reply_format(self, tool_format: str | None = None) -> ReplyFormat:
        """:data:`GPT_OSS`.

        Raises:
            InvalidRequest: ``tool_format`` is another name.
        """
        if tool_format not in (None, "harmony"):
            raise InvalidRequest("tool_format", tool_format, "the harmony format has 'harmony'")
        return GPT_OSS
