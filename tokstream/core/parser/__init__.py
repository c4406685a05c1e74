"""The response parser: a reply's tokens -> reasoning, content, tool calls and segments.

Sans-IO and pull-based (``_core`` has the theory of operation). A
:class:`ReplyFormat` (``_format``) describes a family's reply as a table; the
chat formats in :mod:`tokstream.chat` own those tables, and the parser reads
them. ``_hermes``, ``_qwen3_coder``, ``_deepseek``, ``_pythonic``, ... are call
decoders (one complete call body each; a pythonic body holds several), and
``_harmony`` / ``_mistral`` route message headers; ``_whole`` is the
convenience form for a finished output.
"""

from __future__ import annotations

from ._core import ResponseParser
from ._deepseek import decode_deepseek_v3, decode_deepseek_v31, decode_dsml
from ._events import (
    NEED_TOKENS,
    NeedTokens,
    ParseEvent,
    Reply,
    ReplySegment,
    SegmentKind,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallOpened,
    ToolCallStatus,
)
from ._format import (
    FAMILY_REPLY_FORMATS,
    FAMILY_REPLY_VARIANTS,
    ROUTED,
    CallDecoder,
    CallListDecoder,
    DecodedCall,
    HeaderRouter,
    ReplyFormat,
    State,
    family_reply_format,
    get_reply_format,
    register_reply_format,
    registered_reply_formats,
)
from ._harmony import decode_harmony_arguments, route_harmony
from ._hermes import decode_hermes
from ._mistral import route_mistral
from ._protocols import Detokenizer, ParserTokenizer, ThinkingMode, ToolFormat
from ._pythonic import decode_pythonic
from ._qwen3_coder import decode_qwen3_coder
from ._tools import ToolSpecs
from ._whole import parse_output
from ._xml_calls import decode_glm, decode_kimi_k2, decode_minimax_m2

__all__ = [
    "FAMILY_REPLY_FORMATS",
    "FAMILY_REPLY_VARIANTS",
    "NEED_TOKENS",
    "ROUTED",
    "CallDecoder",
    "CallListDecoder",
    "DecodedCall",
    "Detokenizer",
    "HeaderRouter",
    "NeedTokens",
    "ParseEvent",
    "ParserTokenizer",
    "Reply",
    "ReplyFormat",
    "ReplySegment",
    "ResponseParser",
    "SegmentKind",
    "State",
    "TextDelta",
    "ThinkingDelta",
    "ThinkingMode",
    "ToolCall",
    "ToolCallOpened",
    "ToolCallStatus",
    "ToolFormat",
    "ToolSpecs",
    "decode_deepseek_v3",
    "decode_deepseek_v31",
    "decode_dsml",
    "decode_glm",
    "decode_harmony_arguments",
    "decode_hermes",
    "decode_kimi_k2",
    "decode_minimax_m2",
    "decode_pythonic",
    "decode_qwen3_coder",
    "family_reply_format",
    "get_reply_format",
    "parse_output",
    "register_reply_format",
    "registered_reply_formats",
    "route_harmony",
    "route_mistral",
]
