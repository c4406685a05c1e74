"""Tokenizer: exact encode/decode over Hugging Face ``tokenizers`` or tiktoken vocabularies.

It loads what users have (a model directory, a ``tokenizer.json``, Mistral's
Tekken JSON, a tiktoken file with a family hint), looks up added-token IDs by
name, encodes text to ``np.int32`` arrays (never adding special tokens on its
own), decodes, tells the model family (``Tokenizer.family``), and
**detokenizes incrementally**: feed token IDs one at a time and get text deltas
that never contain a U+FFFD made by cutting a UTF-8 character between tokens.

Modules: ``_core`` (``Tokenizer``, ``IncrementalDetokenizer``), ``_backends``
(the HF and tiktoken backends behind one protocol), ``_files`` (finding and
reading tokenizer files), ``_families`` (family names, the special-token tables
tiktoken files leave out, detection).

This package deliberately does not render chat templates (see ``tokstream.chat``),
never adds BOS/EOS or other special tokens implicitly, downloads nothing, and
imports neither trio nor httpx.
"""

from __future__ import annotations

from ._core import IncrementalDetokenizer, Tokenizer
from ._families import FAMILIES

__all__ = ["FAMILIES", "IncrementalDetokenizer", "Tokenizer"]
