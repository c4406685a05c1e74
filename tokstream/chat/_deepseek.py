"""DeepSeek: V3 / R1 and V3.1 tool calls, V3.2 / V4 DSML calls, and chat framing.

Reply tables (what vLLM's ``deepseek_v3``, ``deepseek_v31``, ``deepseek_v32``
and ``deepseek_v4`` tool parsers and the ``deepseek_r1`` / ``deepseek_v3``
reasoning parsers read):

* :data:`DEEPSEEK_V31`: ``<｜tool▁calls▁begin｜>`` opens a section of
  ``<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{json}<｜tool▁call▁end｜>`` calls,
  closed by ``<｜tool▁calls▁end｜>`` (all single tokens).
* :data:`DEEPSEEK_V3` (V3-0324, R1, R1-0528): the same section, each call
  ``function<｜tool▁sep｜>NAME`` then the arguments in a ```` ```json ````
  fence.
* :data:`DEEPSEEK_V32` / :data:`DEEPSEEK_V4`: ``<｜DSML｜function_calls>`` (V4:
  ``<｜DSML｜tool_calls>``) holds ``<｜DSML｜invoke name="...">`` calls, each
  closed by ``</｜DSML｜invoke>``; the section's end also ends an open call. A
  bare ``invoke`` in content starts a call too. These tags are spelled by
  several tokens (``｜DSML｜`` is one), so they are matched in text.
* All: ``<think>...</think>`` reasoning (a redundant ``<think>`` inside a block
  the prompt opened is absorbed), and ``<｜end▁of▁sentence｜>`` ends the reply.

Where tokstream differs from vLLM, on purpose: text after a tool-call section
is kept as content (vLLM drops it), a call whose arguments are not JSON is
reported with ``INVALID_JSON`` (vLLM passes the raw string on), and a V3.1
call's JSON string may contain the call's end tag as text.

:class:`DeepSeekV32Format` frames messages as DeepSeek's own V3.2 encoder
(``encoding_dsv32.py``, shipped in vLLM as
``vllm.tokenizers.deepseek_v32_encoding``) renders them. It is not
append-only, and tokstream does this instead:

* **The thinking marker.** A user message ends with ``<｜Assistant｜>`` and the
  encoder then writes ``<think>`` (thinking mode, last user message) or
  ``</think>``: tokstream writes that marker with what follows, the generation
  prompt (``thinking=True``: ``<think>``; otherwise ``</think>``) or a history
  assistant message. When a later user message arrives, the encoder turns
  every earlier ``<think>`` into ``</think>`` and drops the reasoning; tokstream
  keeps what was sampled, so each prompt extends the last.
* **Tool results.** The encoder closes a run of results with
  ``</function_results>\\n\\n`` and the marker only after the last one; a
  result holds that closing framing back (:attr:`Rendering.close`) and the next
  result retracts it. So between results a prompt ends at ``</result>\\n``
  (DeepSeek's BPE merges ``>\\n``: no message may end between the two). A
  user message right after results starts with ``</think>``, as the encoder
  writes it there.

:class:`DeepSeekV31Format` frames messages as V3.1's chat template does
(``tests/data/templates/deepseek_v3_1.jinja``): ``<｜begin▁of▁sentence｜>`` and
the system prompt, ``<｜User｜>...``, an assistant turn opened by
``<｜Assistant｜></think>`` after a user message (``<think>`` in thinking mode,
for the generation prompt) and closed by ``<｜end▁of▁sentence｜>``, calls as the
model writes them, tool results as
``<｜tool▁output▁begin｜>...<｜tool▁output▁end｜>``; after tool results the model
goes on with no prompt at all. It is not append-only, and tokstream does this
instead:

* **Dropped reasoning.** The template renders every earlier assistant turn as
  ``<｜Assistant｜></think>`` and its content after ``</think>``: sampled
  reasoning (and the ``<think>`` a thinking-mode prompt opened) are kept.
* **System messages** are all joined at the very start: a system message after
  the first raises :class:`~tokstream.InvalidRequest`.
* **Tool definitions** are not rendered by the template (V3.1's model card has
  callers describe them in the system prompt): passing them raises.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .._exceptions import InvalidRequest
from ..core.parser import (
    ReplyFormat,
    State,
    decode_deepseek_v3,
    decode_deepseek_v31,
    decode_dsml,
)
from ._base import Rendering, Role, Segment

if TYPE_CHECKING:
    from .._tokenizer import Tokenizer

__all__ = [
    "DEEPSEEK_V3",
    "DEEPSEEK_V4",
    "DEEPSEEK_V31",
    "DEEPSEEK_V32",
    "DeepSeekV31Format",
    "DeepSeekV32Format",
]

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
_DSML = "｜DSML｜"

_THINK: tuple[tuple[State, str, State], ...] = (
    ("text", "<think>", "thinking"),
    ("thinking", "<think>", "thinking"),  # redundant: absorbed
    ("thinking", "</think>", "text"),
)

_V31_ROWS: tuple[tuple[State, str, State], ...] = (
    # state       tag                        leads to
    ("text",      "<｜tool▁calls▁begin｜>",  "calls"),
    ("thinking",  "<｜tool▁calls▁begin｜>",  "calls"),
    ("calls",     "<｜tool▁call▁begin｜>",   "tool_call"),
    ("calls",     "<｜tool▁calls▁end｜>",    "text"),
    ("tool_call", "<｜tool▁call▁end｜>",     "calls"),
    ("tool_call", "<｜tool▁calls▁end｜>",    "text"),
    ("tool_call", "<｜tool▁call▁begin｜>",   "tool_call"),  # cuts the open call
)  # fmt: skip

DEEPSEEK_V31 = ReplyFormat(
    "deepseek_v31", (*_THINK, *_V31_ROWS), (EOS,), decode_deepseek_v31, call_body="json"
)
"""DeepSeek V3.1 tool calls and reasoning."""

DEEPSEEK_V3 = ReplyFormat(
    "deepseek_v3", (*_THINK, *_V31_ROWS), (EOS,), decode_deepseek_v3, call_body="json"
)
"""DeepSeek V3-0324 / R1 / R1-0528: V3.1's tags, ``function<｜tool▁sep｜>NAME`` and
fenced JSON arguments in each call; ``<think>`` reasoning."""


def _dsml_table(section: tuple[str, ...]) -> tuple[tuple[State, str, State], ...]:
    open_tag, close_tag = f"<{_DSML}{section[0]}>", f"</{_DSML}{section[0]}>"
    rows: list[tuple[State, str, State]] = [*_THINK]
    for tag in (open_tag, *(f"<{_DSML}{alt}>" for alt in section[1:])):
        rows += [("text", tag, "calls"), ("thinking", tag, "calls"), ("calls", tag, "calls")]
    rows += [
        ("text", f"<{_DSML}invoke", "tool_call"),
        ("calls", f"<{_DSML}invoke", "tool_call"),
        ("calls", close_tag, "text"),
        ("tool_call", f"</{_DSML}invoke>", "calls"),
        ("tool_call", close_tag, "text"),
    ]
    return tuple(rows)


DEEPSEEK_V32 = ReplyFormat("deepseek_v32", _dsml_table(("function_calls",)), (EOS,), decode_dsml)
"""DeepSeek V3.2: DSML calls in ``<｜DSML｜function_calls>``."""

DEEPSEEK_V4 = ReplyFormat(
    "deepseek_v4", _dsml_table(("tool_calls", "toolcalls", "tool")), (EOS,), decode_dsml
)
"""DeepSeek V4: DSML calls in ``<｜DSML｜tool_calls>`` (spelling variants accepted)."""

TOOLS_SYSTEM = """## Tools
You have access to a set of tools you can use to answer the user's question.
You can invoke functions by writing a "<{dsml}function_calls>" block like the following as part of your reply to the user:
<{dsml}function_calls>
<{dsml}invoke name="$FUNCTION_NAME">
<{dsml}parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</{dsml}parameter>
...
</{dsml}invoke>
<{dsml}invoke name="$FUNCTION_NAME2">
...
</{dsml}invoke>
</{dsml}function_calls>
String and scalar parameters should be specified as is without any escaping or quotes, while lists and objects should use JSON format. The "string" attribute should be set to "true" for string type parameters and "false" for other types (numbers, booleans, arrays, objects).
If the thinking_mode is enabled, then after function results you should strongly consider outputting a thinking block. Here is an example:
<{dsml}function_calls>
...
</{dsml}function_calls>
<function_results>
...
</function_results>
<think>...thinking about results</think>
Here are the functions available in JSONSchema format:
<functions>
{schemas}
</functions>
"""  # noqa: E501  (the model's prompt text, verbatim)


def to_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def dsml_call(name: str, arguments: Mapping[str, Any] | str) -> str:
    args = json.loads(arguments) if isinstance(arguments, str) else arguments
    params = "\n".join(
        f'<{_DSML}parameter name="{k}" string="{"true" if isinstance(v, str) else "false"}">'
        f"{v if isinstance(v, str) else to_json(v)}</{_DSML}parameter>"
        for k, v in args.items()
    )
    return f'<{_DSML}invoke name="{name}">\n{params}\n</{_DSML}invoke>'


_RESULTS_CLOSE = (Segment("framing", "</function_results>\n\n"),)


class _DeepSeekFraming:
    """What every DeepSeek chat format shares: BOS, the EOS stop, and a marker check.

    Args:
        tokenizer: The model's tokenizer; it must hold the format's markers.

    Raises:
        UnknownTokenError: A marker the format needs is not in the vocabulary.
    """

    __slots__ = ("_eos",)
    _NAME: ClassVar[str]
    _MARKERS: ClassVar[tuple[str, ...]]

    def __init__(self, tokenizer: Tokenizer) -> None:
        for marker in self._MARKERS:
            tokenizer.token_id(marker)
        self._eos = tokenizer.token_id(EOS)

    @property
    def name(self) -> str:
        """The format's registered name."""
        return self._NAME

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """``(<｜end▁of▁sentence｜>,)``."""
        return (self._eos,)

    def preamble(self) -> Rendering:
        """``<｜begin▁of▁sentence｜>``."""
        return Rendering((Segment("framing", BOS),))


class DeepSeekV32Format(_DeepSeekFraming):
    """DeepSeek V3.2 framing (see the module docstring for the rules).

    Args:
        tokenizer: A tokenizer with DeepSeek's BOS, EOS, ``<｜User｜>`` and
            ``<｜Assistant｜>`` tokens.

    Raises:
        UnknownTokenError: One of those tokens is missing.
    """

    __slots__ = ()
    _NAME = "deepseek_v32"
    _MARKERS = (BOS, "<｜User｜>", "<｜Assistant｜>")

    def system(self, content: str | None, tools: Sequence[Mapping[str, Any]] | None) -> Rendering:
        """The tool block (as the encoder's leading tools-only system message), then content."""
        segs: list[Segment] = []
        if tools:
            schemas = "\n".join(to_json(t.get("function", t)) for t in tools)
            segs.append(Segment("tools", "\n\n" + TOOLS_SYSTEM.format(dsml=_DSML, schemas=schemas)))
        if content:
            segs.append(Segment("system", content))
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
        """A user turn (``<｜User｜>...<｜Assistant｜>``), a tool result or a system text."""
        if role == "tool":
            # "</result>\n" ends a result: DeepSeek's BPE merges ">\n", so a
            # message may end only after it (the next starts at a clean "<").
            body = (
                Segment("framing", "<result>"),
                Segment("tool", content),
                Segment("framing", "</result>\n"),
            )
            if prev_role == "tool":
                return Rendering(body, retract=_RESULTS_CLOSE, close=_RESULTS_CLOSE)
            opening = Segment("framing", "\n\n<function_results>\n")
            return Rendering((opening, *body), close=_RESULTS_CLOSE)
        if role == "assistant":
            raise InvalidRequest("role", role, "render assistant messages with assistant()")
        if role == "system":
            return Rendering((Segment("system", content),))
        head = "</think><｜User｜>" if prev_role == "tool" else "<｜User｜>"
        return Rendering(
            (
                Segment("framing", head),
                Segment("user", content),
                Segment("framing", "<｜Assistant｜>"),
            )
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
        """History: ``<think>R</think>`` (current turn, with reasoning) or ``</think>``,
        then content, DSML calls and ``<｜end▁of▁sentence｜>``."""
        if current_turn and reasoning:
            segs = [Segment("thinking", "<think>" + reasoning + "</think>")]
        else:
            segs = [Segment("framing", "</think>")]
        if content:
            segs.append(Segment("text", content))
        if tool_calls:
            calls = "\n".join(
                dsml_call(f["name"], f["arguments"])
                for f in (tc.get("function") or tc for tc in tool_calls)
            )
            segs.append(
                Segment(
                    "tool_call",
                    f"\n\n<{_DSML}function_calls>\n{calls}\n</{_DSML}function_calls>",
                )
            )
        segs.append(Segment("framing", EOS))
        return Rendering(tuple(segs))

    def generation_prompt(
        self, *, thinking: bool | None, prev_role: Role | None = None
    ) -> Rendering:
        """``<think>`` when ``thinking`` is true, else ``</think>`` (chat mode, the default)."""
        return Rendering((Segment("framing", "<think>" if thinking else "</think>"),))

    def close_reply(self, last_id: int | None) -> Rendering:
        """Nothing after a sampled ``<｜end▁of▁sentence｜>``, else that token."""
        return Rendering(() if last_id == self._eos else (Segment("framing", EOS),))

    def reply_format(self, tool_format: str | None = None) -> ReplyFormat:
        """:data:`DEEPSEEK_V32` (or ``"deepseek_v4"``'s wrapper).

        Raises:
            InvalidRequest: ``tool_format`` is another name.
        """
        formats = {"deepseek_v32": DEEPSEEK_V32, "deepseek_v4": DEEPSEEK_V4}
        fmt = formats.get(tool_format or "deepseek_v32")
        if fmt is None:
            raise InvalidRequest(
                "tool_format",
                tool_format,
                f"the deepseek_v32 chat format supports {sorted(formats)}",
            )
        return fmt


_V31_CALL = "<｜tool▁call▁begin｜>{name}<｜tool▁sep｜>{args}<｜tool▁call▁end｜>"


class DeepSeekV31Format(_DeepSeekFraming):
    """DeepSeek V3.1 framing (see the module docstring for the rules).

    Args:
        tokenizer: A tokenizer with DeepSeek's BOS, EOS, ``<｜User｜>``,
            ``<｜Assistant｜>`` and V3.1's tool-call tokens.

    Raises:
        UnknownTokenError: One of those tokens is missing.
    """

    __slots__ = ()
    _NAME = "deepseek_v31"
    _MARKERS = (BOS, "<｜User｜>", "<｜Assistant｜>", "<｜tool▁output▁begin｜>")

    def system(self, content: str | None, tools: Sequence[Mapping[str, Any]] | None) -> Rendering:
        """The system prompt, right after the BOS.

        Raises:
            InvalidRequest: ``tools`` given (the template renders none).
        """
        if tools:
            raise InvalidRequest(
                "tools",
                f"{len(tools)} definitions",
                "DeepSeek V3.1's template renders no tool definitions: describe them in the "
                "system prompt, as its model card shows",
            )
        return Rendering(() if content is None else (Segment("system", content),))

    def message(
        self,
        role: Role,
        content: str,
        *,
        prev_role: Role | None,
        name: str | None = None,
        call_id: str | None = None,
    ) -> Rendering:
        """A user turn or a tool result."""
        if role == "assistant":
            raise InvalidRequest("role", role, "render assistant messages with assistant()")
        if role == "system":
            raise InvalidRequest(
                "role", role, "DeepSeek V3.1 joins every system message at the start: use one"
            )
        if role == "tool":
            return Rendering(
                (
                    Segment("framing", "<｜tool▁output▁begin｜>"),
                    Segment("tool", content),
                    Segment("framing", "<｜tool▁output▁end｜>"),
                )
            )
        return Rendering((Segment("framing", "<｜User｜>"), Segment("user", content)))

    def assistant(
        self,
        content: str,
        *,
        reasoning: str | None,
        tool_calls: Sequence[Mapping[str, Any]] | None,
        current_turn: bool,
        prev_role: Role | None = None,
    ) -> Rendering:
        """History: ``<｜Assistant｜></think>`` after a user message, the content
        (reasoning is not rendered: the template drops it), the calls, the EOS.

        ``tool_calls`` items are ``{"name", "arguments"}`` or OpenAI-style
        ``{"function": {...}}``; string arguments are written verbatim.
        """
        segs = [Segment("framing", "<｜Assistant｜></think>")] if prev_role == "user" else []
        if content:
            segs.append(Segment("text", content))
        if tool_calls:
            calls = "".join(
                _V31_CALL.format(
                    name=f["name"],
                    args=f["arguments"]
                    if isinstance(f["arguments"], str)
                    else to_json(f["arguments"]),
                )
                for f in (tc.get("function") or tc for tc in tool_calls)
            )
            segs.append(Segment("tool_call", f"<｜tool▁calls▁begin｜>{calls}<｜tool▁calls▁end｜>"))
        segs.append(Segment("framing", EOS))
        return Rendering(tuple(segs))

    def generation_prompt(
        self, *, thinking: bool | None, prev_role: Role | None = None
    ) -> Rendering:
        """After a user message ``<｜Assistant｜>`` and ``<think>`` (``thinking``) or
        ``</think>``; after a tool result nothing (the model goes on)."""
        if prev_role != "user":
            return Rendering(())
        marker = "<think>" if thinking else "</think>"
        return Rendering((Segment("framing", "<｜Assistant｜>"), Segment("framing", marker)))

    def close_reply(self, last_id: int | None) -> Rendering:
        """Nothing after a sampled ``<｜end▁of▁sentence｜>``, else that token."""
        return Rendering(() if last_id == self._eos else (Segment("framing", EOS),))

    def reply_format(self, tool_format: str | None = None) -> ReplyFormat:
        """:data:`DEEPSEEK_V31`.

        Raises:
            InvalidRequest: ``tool_format`` is another name.
        """
        if tool_format not in (None, "deepseek_v31"):
            raise InvalidRequest(
                "tool_format", tool_format, "the deepseek_v31 format has 'deepseek_v31'"
            )
        return DEEPSEEK_V31
