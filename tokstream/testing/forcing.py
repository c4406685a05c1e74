"""Force a vLLM completion to an exact token-ID sequence with structured outputs.

The tiny model has random weights, so its free output is noise. vLLM's structured
outputs make it deterministic: a Lark grammar made only of token references,
``start: <[151667]> <[198]> ...``, sent as ``structured_outputs.grammar``, lets
the model emit exactly those IDs (xgrammar compiles it to ``Token(151667) ...``).
Forcing the canonical tokenization of a text gives the IDs a real Qwen model
would emit, e.g. ``<tool_call>`` as the single ID 151657.

Two pitfalls, both handled here:

* A stop token (EOS 151645 / 151643, or any ID in ``stop_token_ids``) must never
  be inside the grammar: xgrammar masks stop tokens until the grammar completes,
  the mask goes empty and the request dies mid-stream with an in-band error.
  :func:`forced_grammar` refuses such IDs.
* After the grammar completes only stop tokens are allowed. A ``logit_bias`` of
  -100 on ``<|endoftext|>`` makes the last ID ``<|im_end|>`` (``stop_reason``
  null), as :func:`forcing_body` sets up.

This module builds request fields only; it sends nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .model import ENDOFTEXT_ID, IM_END_ID

__all__ = ["DEFAULT_STOP_IDS", "forced_grammar", "forcing_body"]

DEFAULT_STOP_IDS: frozenset[int] = frozenset({ENDOFTEXT_ID, IM_END_ID})
"""Qwen3's EOS IDs (``<|endoftext|>``, ``<|im_end|>``): never force these."""


def forced_grammar(ids: Iterable[int], *, stop_ids: Iterable[int] = DEFAULT_STOP_IDS) -> str:
    """Return a Lark grammar that matches exactly the token-ID sequence ``ids``.

    Args:
        ids: The IDs to force, in order (at least one).
        stop_ids: IDs that end generation (EOS and any ``stop_token_ids``); none
            of them may be forced.

    Returns:
        ``"start: <[id1]> <[id2]> ..."`` for ``structured_outputs.grammar``.

    Raises:
        ValueError: ``ids`` is empty, holds a negative ID, or holds a stop ID.
    """
    seq = [int(i) for i in ids]
    if not seq:
        raise ValueError("cannot force an empty token sequence")
    if any(i < 0 for i in seq):
        raise ValueError(f"negative token ID in {seq}")
    stops = set(stop_ids)
    bad = sorted({i for i in seq if i in stops})
    if bad:
        raise ValueError(
            f"stop token ID(s) {bad} inside a forced grammar would make vLLM fail "
            "mid-stream; force the IDs before the stop token and let it end the stream"
        )
    return "start: " + " ".join(f"<[{i}]>" for i in seq)


def forcing_body(
    ids: Iterable[int], *, end_with: int = IM_END_ID, stop_token_ids: Iterable[int] = ()
) -> dict[str, Any]:
    """Return the extra request fields that force ``ids`` then end on ``end_with``.

    Args:
        ids: The completion IDs to force (without the final stop token).
        end_with: The stop ID the stream should end with: ``151645`` (the default,
            ``stop_reason`` null) or an ID in ``stop_token_ids``. Every other
            default stop ID gets a ``logit_bias`` of -100.
        stop_token_ids: Extra stop IDs the request will send.

    Returns:
        ``{"structured_outputs": {"grammar": ...}, "logit_bias": {...}}``, for a
        client's ``extra_body``.

    Raises:
        ValueError: As :func:`forced_grammar`, or ``end_with`` is not a stop ID.
    """
    stops = set(DEFAULT_STOP_IDS) | {int(i) for i in stop_token_ids}
    if end_with not in stops:
        raise ValueError(f"end_with={end_with} is not a stop ID ({sorted(stops)})")
    grammar = forced_grammar(ids, stop_ids=stops)
    bias = {str(i): -100 for i in sorted(stops - {end_with})}
    return {"structured_outputs": {"grammar": grammar}, "logit_bias": bias}
