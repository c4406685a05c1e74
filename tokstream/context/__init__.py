"""The context tree: a conversation kept as exact token IDs (pure, no I/O).

:class:`Context` holds messages whose leaves carry text *and* IDs; prompt
messages are tokenized once, when added, through a :mod:`tokstream.chat`
format, and model output is stored as the exact IDs it streamed.
:class:`ReplyBuilder` grows one reply leaf by leaf. Nothing here imports trio or
httpx.
"""

from __future__ import annotations

from ._context import Context
from ._nodes import Leaf, Message
from ._reply import ReplyBuilder

__all__ = ["Context", "Leaf", "Message", "ReplyBuilder"]
