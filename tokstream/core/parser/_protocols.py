"""What the parser needs from its collaborators, as structural protocols.

``tokstream.Tokenizer`` satisfies :class:`ParserTokenizer`, and
``tokstream.ReplyBuilder`` (``Context.begin_assistant()``) satisfies
:class:`LeafSink`; the parser imports neither, so it can be tested and reused
with anything of the same shape.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["Detokenizer", "LeafSink", "ParserTokenizer", "ThinkingMode", "ToolFormat"]

ToolFormat: TypeAlias = Literal["hermes", "qwen3_coder"]
ThinkingMode: TypeAlias = Literal["auto", "open", "off"]


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


class LeafSink(Protocol):
    """Where segments go as they complete: ``tokstream.ReplyBuilder`` fits."""

    def add_leaf(
        self,
        kind: Any,
        ids: Any,
        text: str | None = None,
        logprobs: Any = None,
    ) -> object:
        """Add one complete leaf (kind, exact IDs, their text and logprobs)."""
        ...
