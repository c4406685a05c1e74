"""The response parser: a reply's tokens -> reasoning, content and tool calls.

Sans-IO (see ``_core`` for the theory of operation). ``_hermes`` and
``_qwen3_coder`` parse one complete call body each; ``_whole`` is the
convenience form for a finished output.
"""

from __future__ import annotations

from ._core import ResponseParser
from ._events import (
    ParseEvent,
    Reply,
    ReplySegment,
    SegmentKind,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallStarted,
    ToolCallStatus,
)
from ._protocols import Detokenizer, LeafSink, ParserTokenizer, ThinkingMode, ToolFormat
from ._whole import parse_output

__all__ = [
    "Detokenizer",
    "LeafSink",
    "ParseEvent",
    "ParserTokenizer",
    "Reply",
    "ReplySegment",
    "ResponseParser",
    "SegmentKind",
    "TextDelta",
    "ThinkingDelta",
    "ThinkingMode",
    "ToolCall",
    "ToolCallStarted",
    "ToolCallStatus",
    "ToolFormat",
    "parse_output",
]
