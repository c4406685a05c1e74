"""DeepSeek V4 framing, as DeepSeek's own V4 encoder renders a conversation.

The reference is ``encoding_dsv4`` (shipped in vLLM as
``vllm.tokenizers.deepseek_v4_encoding``; vLLM's V4 tokenizer calls its
``encode_messages``). ``<｜begin▁of▁sentence｜>``, the system prompt and then
the tool definitions (V4's ``## Tools`` text), ``<｜User｜>`` turns, and
assistant turns opened by ``<｜Assistant｜>`` and the thinking marker
(``<think>`` in thinking mode, else ``</think>``), each reasoning ``</think>``,
content, calls in ``<｜DSML｜tool_calls>`` and ``<｜end▁of▁sentence｜>``. V4
has no tool role: a run of results is one user turn of
``<tool_result>...</tool_result>`` parts joined by ``\\n\\n``, and a user
message right after results joins that turn too. The reply table is
:data:`~tokstream.chat.DEEPSEEK_V4`.

How tokstream renders it, one message at a time:

* A user turn, a tool result or the system prompt holds ``<｜Assistant｜>`` as
  its closing framing (:attr:`Rendering.close`): the encoder writes it only
  when an assistant turn follows. The marker is written with what follows:
  the generation prompt (``thinking=True``: ``<think>``, else ``</think>``) or
  an assistant message (``<think>REASONING</think>`` when it is given
  reasoning, even empty: thinking mode; ``</think>`` without: chat mode).
* Results: a result ends at ``</tool_result`` and holds ``>`` with the close,
  since DeepSeek's BPE merges ``>\\n\\n``; the next result, or a user message
  after results, retracts it and starts with ``>\\n\\n``.
* **Reasoning effort.** In thinking mode the encoder starts the first message
  with :data:`DEEPSEEK_V4_REASONING_EFFORT`'s text for the effort asked
  (``"low"``, the encoder's default: none). tokstream writes none; start the
  system message with ``DEEPSEEK_V4_REASONING_EFFORT["high"]`` (or add a
  system message of just that text) to get it. vLLM's chat endpoint asks for
  ``"high"`` when thinking is on, and turns thinking on by default.

Where the encoder is not append-only, and what tokstream does:

* **Dropped reasoning.** In thinking mode without tools, a new user message
  turns every earlier ``<think>`` into ``</think>`` and drops that reasoning;
  tokstream keeps what was sampled. With tools (and in chat mode) the
  encoder keeps it, and tokstream's prompts are its prompts.
* **Result order.** The encoder sorts a turn's results by the order of the
  calls they answer; tokstream writes them as added (add them in call order,
  as :func:`tokstream.run_turn` does).
* **Merges with arbitrary text.** Two user messages in a row, a tool result
  right after a user message, and a later system message are joined to the
  text before them with no token in between, where BPE may merge across the
  join: tokstream raises :class:`~tokstream.InvalidRequest` (join the texts
  into one message instead).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._exceptions import InvalidRequest
from ..core.parser import ReplyFormat
from ._base import Rendering, Role, Segment
from ._deepseek import BOS, DEEPSEEK_V4, EOS, _DeepSeekFraming, dsml_call, to_json

if TYPE_CHECKING:
    pass

__all__ = ["DEEPSEEK_V4_REASONING_EFFORT", "DeepSeekV4Format"]

_DSML = "｜DSML｜"

DEEPSEEK_V4_REASONING_EFFORT: dict[str, str] = {
    "low": "",
    "high": (
        "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
        "You MUST be very thorough in your thinking and comprehensively decompose the problem "
        "to resolve the root cause, rigorously stress-testing your logic against all potential "
        "paths, edge cases, and adversarial scenarios.\n"
        "Explicitly write out your entire deliberation process, documenting every intermediate "
        "step, considered alternative, and rejected hypothesis to ensure absolutely no "
        "assumption is left unchecked.\n\n"
    ),
    "max": (
        "Reasoning Effort: Beyond maximum \u2014 exhaustive, relentless, and uncompromising.\n"
        "You MUST reason with the utmost depth and rigor, leaving absolutely nothing to chance: "
        "exhaustively decompose the problem into its most fundamental components, trace every "
        "causal chain to its root, and resolve the underlying cause rather than any surface "
        "symptom.\n"
        "Do not stop reasoning until you have independently verified the solution from "
        "multiple angles and are certain that no assumption remains unchecked and no error "
        "remains undiscovered.\n\n"
    ),
}
"""The text V4's encoder starts a thinking-mode conversation with, per reasoning effort."""

TOOLS_TEMPLATE = """## Tools

You have access to a set of tools to help answer the user's question. You can invoke tools by writing a "<{dsml}tool_calls>" block like the following:

<{dsml}tool_calls>
<{dsml}invoke name="$TOOL_NAME">
<{dsml}parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</{dsml}parameter>
...
</{dsml}invoke>
<{dsml}invoke name="$TOOL_NAME2">
...
</{dsml}invoke>
</{dsml}tool_calls>

String parameters should be specified as is and set `string="true"`. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set `string="false"`.

If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside <think>...</think> BEFORE any tool calls or final response.

Otherwise, output directly after </think> with tool calls or final response.

### Available Tool Schemas

{schemas}

You MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.
"""  # noqa: E501  (the model's prompt text, verbatim)

_ASSISTANT = Segment("framing", "<｜Assistant｜>")
_TURN_CLOSE = (_ASSISTANT,)
_RESULT_CLOSE = (Segment("framing", ">"), _ASSISTANT)


class DeepSeekV4Format(_DeepSeekFraming):
    """DeepSeek V4 framing (see the module docstring for the rules).

    Args:
        tokenizer: A tokenizer with DeepSeek's BOS, EOS, ``<｜User｜>``,
            ``<｜Assistant｜>`` and ``｜DSML｜`` tokens.

    Raises:
        UnknownTokenError: One of those tokens is missing.
    """

    __slots__ = ()
    _NAME = "deepseek_v4"
    _MARKERS = (BOS, "<｜User｜>", "<｜Assistant｜>", _DSML)

    def system(self, content: str | None, tools: Sequence[Mapping[str, Any]] | None) -> Rendering:
        """The system prompt, then ``\\n\\n`` and the tool definitions."""
        segs: list[Segment] = []
        if content:
            segs.append(Segment("system", content))
        if tools:
            schemas = "\n".join(to_json(t.get("function", t)) for t in tools)
            segs.append(
                Segment("tools", "\n\n" + TOOLS_TEMPLATE.format(dsml=_DSML, schemas=schemas))
            )
        return Rendering(tuple(segs), close=_TURN_CLOSE)

    def message(
        self,
        role: Role,
        content: str,
        *,
        prev_role: Role | None,
        name: str | None = None,
        call_id: str | None = None,
    ) -> Rendering:
        """A user turn or a tool result (a later system message raises).

        Raises:
            InvalidRequest: A system message after the first, a user message
                right after a user message, or a tool result that does not
                follow an assistant message or another result.
        """
        if role == "assistant":
            raise InvalidRequest("role", role, "render assistant messages with assistant()")
        if role == "system":
            raise InvalidRequest(
                "role",
                role,
                "DeepSeek V4 writes a later system message straight after the text before it; "
                "put it in the first system message or in a user message",
            )
        if role == "tool":
            if prev_role == "tool":
                opening = Segment("framing", ">\n\n<tool_result>")
                return self._result(opening, content, retract=_RESULT_CLOSE)
            if prev_role != "assistant":
                raise InvalidRequest(
                    "role",
                    role,
                    f"a DeepSeek V4 tool result answers an assistant's call, not a {prev_role} "
                    "message",
                )
            return self._result(Segment("framing", "<｜User｜><tool_result>"), content, retract=())
        if prev_role == "user":
            raise InvalidRequest(
                "role",
                role,
                "DeepSeek V4 joins two user messages in a row into one turn: add them as one",
            )
        retract: tuple[Segment, ...] = ()
        opening = Segment("framing", "<｜User｜>")
        if prev_role == "tool":
            opening, retract = Segment("framing", ">\n\n"), _RESULT_CLOSE
        elif prev_role == "system":
            retract = _TURN_CLOSE
        return Rendering((opening, Segment("user", content)), retract=retract, close=_TURN_CLOSE)

    @staticmethod
    def _result(opening: Segment, content: str, *, retract: tuple[Segment, ...]) -> Rendering:
        body = (opening, Segment("tool", content), Segment("framing", "</tool_result"))
        return Rendering(body, retract=retract, close=_RESULT_CLOSE)

    def assistant(
        self,
        content: str,
        *,
        reasoning: str | None,
        tool_calls: Sequence[Mapping[str, Any]] | None,
        current_turn: bool,
        prev_role: Role | None = None,
    ) -> Rendering:
        """History: ``<think>REASONING</think>`` (reasoning given: thinking mode) or
        ``</think>``, then content, DSML calls and ``<｜end▁of▁sentence｜>``.

        ``tool_calls`` items are ``{"name", "arguments"}`` or OpenAI-style
        ``{"function": {...}}``; arguments are a mapping or its JSON text.
        """
        if reasoning is not None:
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
                Segment("tool_call", f"\n\n<{_DSML}tool_calls>\n{calls}\n</{_DSML}tool_calls>")
            )
        segs.append(Segment("framing", EOS))
        return Rendering(tuple(segs))

    def generation_prompt(
        self, *, thinking: bool | None, prev_role: Role | None = None
    ) -> Rendering:
        """``<think>`` when ``thinking`` is true, else ``</think>``, after the held
        ``<｜Assistant｜>``; nothing after an assistant message."""
        if prev_role == "assistant":
            return Rendering(())
        return Rendering((Segment("framing", "<think>" if thinking else "</think>"),))

    def close_reply(self, last_id: int | None) -> Rendering:
        """Nothing after a sampled ``<｜end▁of▁sentence｜>``, else that token."""
        return Rendering(() if last_id == self._eos else (Segment("framing", EOS),))

    def reply_format(self, tool_format: str | None = None) -> ReplyFormat:
        """:data:`~tokstream.chat.DEEPSEEK_V4`.

        Raises:
            InvalidRequest: ``tool_format`` is another name.
        """
        if tool_format not in (None, "deepseek_v4"):
            raise InvalidRequest(
                "tool_format", tool_format, "the deepseek_v4 format has 'deepseek_v4'"
            )
        return DEEPSEEK_V4
