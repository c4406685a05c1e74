"""``parse_output``: the response parser applied to one finished output.

Same parser as streaming (``_core.ResponseParser``), fed all IDs at once; text
input is tokenized first. Useful for logged outputs, RL rollouts and tests.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from ._core import ResponseParser
from ._events import Reply
from ._format import ReplyFormat
from ._protocols import ParserTokenizer, ThinkingMode, ToolFormat
from ._tools import ToolSpecs

__all__ = ["parse_output"]


def parse_output(
    ids_or_text: str | Iterable[int] | npt.NDArray[np.integer],
    *,
    tokenizer: ParserTokenizer,
    reply_format: ReplyFormat | None = None,
    tool_format: ToolFormat | None = None,
    tools: ToolSpecs | None = None,
    thinking: ThinkingMode = "auto",
    match_text: bool = True,
) -> Reply:
    """Parse a whole model output into reasoning, content and tool calls.

    Args:
        ids_or_text: The output's token IDs, or its text (tokenized first with
            ``tokenizer.encode``; tags in the text become their special IDs).
        tokenizer: The model's tokenizer (``tokstream.Tokenizer``).
        reply_format: The reply's tags, stops and call decoder (e.g.
            ``Context.chat_format.reply_format()``); see :class:`ResponseParser`.
        tool_format: Instead, a registered format's name: ``"hermes"`` (the
            default) or ``"qwen3_coder"``.
        tools: Tool definitions; see :class:`ResponseParser`.
        thinking: ``"auto"``, ``"open"`` (the prompt opened ``<think>``) or
            ``"off"``; see :class:`ResponseParser`.
        match_text: Also match tags spelled by ordinary tokens.

    Returns:
        The :class:`Reply`: ``reasoning``, ``content``, ``tool_calls`` (each with
        ``name``, parsed ``arguments``, ``status`` and ``raw``), and the
        segments with their exact IDs. Malformed calls are in ``tool_calls``
        with a status other than ``OK``; nothing is dropped.

    Raises:
        InvalidRequest: Bad ``tool_format``/``thinking`` or tool definitions.
    """
    if isinstance(ids_or_text, str):
        ids: npt.NDArray[np.integer] | list[int] = tokenizer.encode(ids_or_text)
    elif isinstance(ids_or_text, np.ndarray):
        ids = ids_or_text
    else:
        ids = [int(i) for i in ids_or_text]
    parser = ResponseParser(
        tokenizer,
        reply_format=reply_format,
        tool_format=tool_format,
        tools=tools,
        thinking=thinking,
        match_text=match_text,
    )
    parser.feed_ids(ids)
    reply = parser.finish()[-1]
    assert isinstance(reply, Reply)
    return reply
