"""Find and read tokenizer files: ``tokenizer.json``, tiktoken ranks, Mistral's Tekken JSON.

:func:`open_backend` turns what a user has (a model directory or one file)
into a backend plus the family the file implies. What it accepts, in order:

* a directory with ``tokenizer.json`` (Hugging Face), else ``tekken.json``
  (Mistral), else one tiktoken file (``tiktoken.model``, ``tokenizer.model``
  or ``*.tiktoken``);
* a ``.json`` file: Tekken if it has Tekken's ``config`` and ``vocab`` list,
  else a Hugging Face ``tokenizer.json``;
* any other file: tiktoken ranks (``base64(token) rank`` lines).

A tiktoken file has no pattern and no special tokens. Added tokens come from a
``tokenizer_config.json`` beside it (its ``added_tokens_decoder``, as Kimi K2
ships), else from the family's table; the pattern always comes from the
family, so ``family=`` is required unless a ``tokenizer_config.json`` names
one the detector recognises. SentencePiece ``tokenizer.model`` files are not
supported (load the model's ``tokenizer.json`` instead).
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

from .._exceptions import InvalidRequest, TokenizerNotFoundError
from ._backends import Backend, HFBackend, TiktokenBackend
from ._families import FAMILIES, detect_family, tiktoken_family

__all__ = [
    "TEKKEN_LEGACY_SPECIALS",
    "open_backend",
    "read_tekken",
    "read_tiktoken_ranks",
    "tekken_backend",
]

TEKKEN_LEGACY_SPECIALS = (
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[TOOL_CALLS]",
    "[IMG]",
    "<pad>",
    "[IMG_BREAK]",
    "[IMG_END]",
    "[PREFIX]",
    "[MIDDLE]",
    "[SUFFIX]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
)
"""The control tokens, ranks 0-19, of a Tekken file that lists none (versions up to v7),
as ``mistral_common``'s ``Tekkenizer.DEPRECATED_SPECIAL_TOKENS``; the rest are
``<SPECIAL_N>`` fillers."""

_TIKTOKEN_NAMES = ("tiktoken.model", "tokenizer.model")


def _not_found(path: Path, what: str) -> TokenizerNotFoundError:
    return TokenizerNotFoundError(
        f"cannot load tokenizer: {what}; pass a model directory that holds tokenizer.json "
        "(or tekken.json, or a tiktoken file with family=...) or the path of such a file",
        path=str(path),
    )


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """Read ``base64(token) rank`` lines.

    Raises:
        InvalidRequest: A line is not in that format (e.g. a SentencePiece model).
    """
    data = path.read_bytes()
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise InvalidRequest(
                "path",
                str(path),
                f"line {n} is not a tiktoken 'base64 rank' line (a SentencePiece "
                "tokenizer.model is not supported: load the model's tokenizer.json)",
            ) from None
    return ranks


def _config_added(directory: Path) -> list[tuple[str, int, bool]] | None:
    """``added_tokens_decoder`` of ``tokenizer_config.json`` in ``directory``, if any."""
    config = directory / "tokenizer_config.json"
    if not config.is_file():
        return None
    decoder = json.loads(config.read_text(encoding="utf-8")).get("added_tokens_decoder")
    if not decoder:
        return None
    return sorted(
        ((t["content"], int(i), bool(t.get("special", True))) for i, t in decoder.items()),
        key=lambda t: t[1],
    )


def _tiktoken_backend(path: Path, family: str | None) -> tuple[Backend, str | None]:
    added = _config_added(path.parent)
    if family is None and added is not None:
        family = detect_family({n: i for n, i, _ in added})
    table = tiktoken_family(family) if family is not None else None
    if table is None:
        raise InvalidRequest(
            "family",
            family,
            f"{str(path)!r} is a tiktoken file, which holds no pre-tokenizer pattern"
            + ("" if added is not None else " and no special tokens")
            + "; pass family= one of "
            + ", ".join(repr(n) for n in FAMILIES if tiktoken_family(n) is not None),
        )
    specials = added if added is not None else list(table.specials)
    if not specials:
        raise InvalidRequest(
            "family", family, f"no tokenizer_config.json beside {str(path)!r} lists its tokens"
        )
    ranks = read_tiktoken_ranks(path)
    try:
        backend = TiktokenBackend(
            ranks, table.pattern, specials, normalization=table.normalization, name=path.name
        )
    except ValueError as exc:
        raise InvalidRequest("family", family, f"does not fit {str(path)!r}: {exc}") from None
    return backend, family


def read_tekken(data: dict[str, Any]) -> tuple[dict[bytes, int], str, list[tuple[str, int, bool]]]:
    """Ranks (shifted past the control tokens), pattern and control tokens of a Tekken file.

    As ``mistral_common``'s ``Tekkenizer``: the first ``default_num_special_tokens``
    IDs are control tokens (from the file's ``special_tokens``, else the legacy
    list, padded with ``<SPECIAL_N>``), then the first ``default_vocab_size -
    default_num_special_tokens`` ranks of ``vocab``. All control tokens are special.
    """
    config = data["config"]
    n_special = int(config["default_num_special_tokens"])
    inner = int(config["default_vocab_size"]) - n_special
    listed = data.get("special_tokens")
    if listed is None:
        names = {i: n for i, n in enumerate(TEKKEN_LEGACY_SPECIALS)}
    else:
        names = {int(t["rank"]): str(t["token_str"]) for t in listed}
    specials = [(names.get(i, f"<SPECIAL_{i}>"), i, True) for i in range(n_special)]
    ranks = {
        base64.b64decode(t["token_bytes"]): int(t["rank"]) + n_special
        for t in data["vocab"][:inner]
    }
    return ranks, str(config["pattern"]), specials


def _is_tekken(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and isinstance(data.get("vocab"), list)
        and isinstance(data.get("config"), dict)
        and "pattern" in data["config"]
    )


def tekken_backend(data: dict[str, Any], name: str = "tekken") -> TiktokenBackend:
    """A backend for a parsed Tekken JSON file."""
    ranks, pattern, specials = read_tekken(data)
    return TiktokenBackend(ranks, pattern, specials, name=name)


def _json_backend(file: Path) -> tuple[Backend, str | None]:
    import tokenizers

    text = file.read_text(encoding="utf-8")
    data = json.loads(text)
    if _is_tekken(data):
        return tekken_backend(data, file.stem), "mistral"
    return HFBackend(tokenizers.Tokenizer.from_str(text)), None


def open_backend(path: Path, family: str | None) -> tuple[Backend, Path, str | None]:
    """Open what ``path`` names; return the backend, the file read and its family.

    The family is ``family`` if given, else what the file implies (Tekken:
    ``"mistral"``; tiktoken: from ``tokenizer_config.json``), else ``None``
    (the caller detects it from the added tokens).

    Raises:
        TokenizerNotFoundError: Nothing loadable at ``path``.
        InvalidRequest: A tiktoken file without a usable ``family``, or a file
            in no known format.
    """
    if path.is_dir():
        candidates = [path / "tokenizer.json", path / "tekken.json"]
        candidates += [path / n for n in _TIKTOKEN_NAMES]
        candidates += sorted(path.glob("*.tiktoken"))
        file = next((c for c in candidates if c.is_file()), None)
        if file is None:
            raise _not_found(
                path / "tokenizer.json",
                f"model directory {str(path)!r} has no tokenizer.json, tekken.json, "
                f"tiktoken.model, tokenizer.model or *.tiktoken (looked for "
                f"{str(path / 'tokenizer.json')!r} first)",
            )
    else:
        file = path
        if not file.is_file():
            raise _not_found(file, f"tokenizer file {str(file)!r} does not exist")
    if file.suffix == ".json":
        backend, implied = _json_backend(file)
        return backend, file, family or implied
    backend, implied = _tiktoken_backend(file, family)
    return backend, file, family or implied
