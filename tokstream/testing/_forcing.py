"""Force a vLLM completion to an exact token-ID sequence with structured outputs.

The tiny model has random weights, so its free output is noise. A Lark grammar
made only of token references, ``start: <[151667]> <[198]> ...``, sent as
``structured_outputs.grammar``, lets it emit exactly those IDs. Forcing the
canonical tokenization of a text gives the IDs a real Qwen model would emit.

Two pitfalls, both handled here:

* A stop token (EOS, or any ID in ``stop_token_ids``) must never be inside the
  grammar: xgrammar masks stop tokens until the grammar completes, the mask goes
  empty and the request dies mid-stream with an in-band error.
* After the grammar completes only stop tokens are allowed; a ``logit_bias`` of
  -100 on every other stop ID picks the one the stream ends with.

This module builds request fields only; it sends nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._exceptions import InvalidRequest
from ._model import ENDOFTEXT_ID, IM_END_ID

__all__ = ["forcing_body"]


def forcing_body(
    ids: Iterable[int],
    *,
    end_with: int = IM_END_ID,
    stop_token_ids: Iterable[int] = (),
    eos_token_ids: Iterable[int] = (ENDOFTEXT_ID, IM_END_ID),
) -> dict[str, Any]:
    """Return the request fields that make vLLM emit ``ids``, then ``end_with``.

    Pass the result as a stream's ``extra_body``. It works on any vLLM with
    structured outputs (0.10 or newer) serving a Qwen2.5/Qwen3-family vocabulary.

    Args:
        ids: The completion IDs to force, without the final stop token.
        end_with: The stop ID the stream ends with: ``<|im_end|>`` (151645, the
            default; ``stop_reason`` is null) or an ID in ``stop_token_ids``.
        stop_token_ids: Extra stop IDs that the request sends.
        eos_token_ids: The model's own stop IDs (its generation config's EOS
            list); the default is Qwen's. For a family model from
            ``ensure_model(family=...)`` pass that family's
            (``[tok.token_id(n) for n in FAMILY_STOPS[family]]``).

    Returns:
        ``{"structured_outputs": {"grammar": "start: <[id]> ..."}, "logit_bias": {...}}``.

    Raises:
        tokstream.InvalidRequest: ``ids`` is empty, holds a negative ID or a stop
            ID (vLLM would fail mid-stream), or ``end_with`` is not a stop ID.
    """
    seq = [int(i) for i in ids]
    stops = {*(int(i) for i in eos_token_ids), *(int(i) for i in stop_token_ids)}
    if end_with not in stops:
        raise InvalidRequest("end_with", end_with, f"not a stop ID ({sorted(stops)})")
    if not seq or min(seq) < 0:
        raise InvalidRequest("ids", seq, "force at least one token, with no negative ID")
    inside = sorted(stops.intersection(seq))
    if inside:
        raise InvalidRequest(
            "ids",
            seq,
            f"stop token ID(s) {inside} inside a forced grammar would make vLLM fail "
            "mid-stream; force the IDs before the stop token and let it end the stream",
        )
    grammar = "start: " + " ".join(f"<[{i}]>" for i in seq)
    bias = {str(i): -100 for i in sorted(stops - {end_with})}
    return {"structured_outputs": {"grammar": grammar}, "logit_bias": bias}
