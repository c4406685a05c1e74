"""What the parser needs from its collaborators, as structural protocols.

``tokstream.Tokenizer`` satisfies :class:`ParserTokenizer`; the parser does not
import it, so it can be tested and reused with anything of the same shape.
"""

from __future__ import annotations

from typing import Literal, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["Detokenizer", "ParserTokenizer", "ThinkingMode", "ToolFormat"]

ToolFormat: TypeAlias = str
"""The name of a registered reply format: ``"hermes"`` or ``"qwen3_coder"`` today."""
ThinkingMode: TypeAlias = Literal["auto", "open", "off"]
"""``"auto"``: thinking tags are recognised; ``"open"``: the reply starts inside a
thinking block the prompt opened; ``"off"``: thinking tags are text."""


class Detokenizer(Protocol):
    """An incremental detokenizer: one stream's IDs in, text deltas out."""

    def feed(self, ids: int) -> str:
        """Push one ID; return the text it completes (``""`` while held back)."""
        ...

    def flush(self) -> str:
        """End the stream: return what is held back (incomplete bytes as U+FFFD)."""
        ...


class ParserTokenizer(Protocol):
    """What the parser needs from a tokenizer (``tokstream.Tokenizer`` has it)."""

    @property
    def added_tokens(self) -> dict[str, int]:
        """Added tokens (specials and tags such as ``<tool_call>``): name -> ID."""
        ...

    def detokenizer(self) -> Detokenizer:
        """A fresh incremental detokenizer for one stream."""
        ...

    def encode(self, text: str) -> npt.NDArray[np.int32]:
        """Encode text to IDs, adding no special tokens of its own."""
        ...
