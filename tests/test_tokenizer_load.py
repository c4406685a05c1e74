"""Tokenizer.load and from_tiktoken: every kind of file users have, families, errors."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tokstream import InvalidRequest, Tokenizer, TokenizerNotFoundError
from tokstream._tokenizer import FAMILIES
from tokstream.testing import family_tokenizer, family_tokenizer_dir


def _write_tiktoken(path: Path, ranks: dict[bytes, int]) -> None:
    lines = (f"{base64.b64encode(t).decode()} {r}" for t, r in ranks.items())
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def llama3_file() -> Path:
    import llama_models

    return Path(llama_models.__file__).parent / "llama3" / "tokenizer.model"


@pytest.fixture(scope="module")
def tekken_file() -> Path:
    import mistral_common

    return Path(mistral_common.__file__).parent / "data" / "tekken_240718.json"


def test_tiktoken_file_with_a_family_hint(llama3_file: Path) -> None:
    tok = Tokenizer.load(llama3_file, family="llama3")
    assert (tok.backend, tok.family, tok.vocab_size) == ("tiktoken", "llama3", 128256)
    assert tok.source == str(llama3_file)
    assert tok.encode("Hello world").tolist() == [9906, 1917]
    assert tok.encode("<|eot_id|>").dtype == np.int32
    assert tok.token_id("<|python_tag|>") == 128010
    assert len(tok.special_tokens) == len(tok.added_tokens) == 256
    assert tok.token_id("Ġworld") == tok.token_id(" world") == 1917  # both spellings
    with pytest.raises(AttributeError, match="tiktoken backend"):
        _ = tok.hf


def test_tiktoken_file_without_a_family_names_the_choices(
    llama3_file: Path, tmp_path: Path
) -> None:
    with pytest.raises(InvalidRequest, match="pass family= one of") as info:
        Tokenizer.load(llama3_file)
    assert "'llama3'" in str(info.value) and "'gpt-oss'" in str(info.value)
    assert info.value.field == "family"
    # A family whose files carry their own tables has no tiktoken table.
    with pytest.raises(InvalidRequest, match="tiktoken file"):
        Tokenizer.load(llama3_file, family="deepseek-v3.1")
    # The same file in a model directory is found by name.
    shutil.copyfile(llama3_file, tmp_path / "tokenizer.model")
    tok = Tokenizer.load(tmp_path, family="llama3")
    assert tok.token_id("<|eot_id|>") == 128009


def test_unknown_family_is_invalid_request(llama3_file: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"did you mean 'llama3'") as info:
        Tokenizer.load(llama3_file, family="llama-3")
    assert info.value.value == "llama-3"
    with pytest.raises(InvalidRequest, match="unknown family"):
        Tokenizer.load(tiny_model_dir, family="nope")


def test_family_ids_that_collide_with_the_ranks_are_refused(llama3_file: Path) -> None:
    # Llama 3's 128000 ranks under Llama 4's specials (from 200000) fit; under
    # gpt-oss's (from 199998) too; but a vocabulary larger than the table does not.
    big = {bytes([i]): i for i in range(256)}
    big.update({f"tok{i}".encode(): i for i in range(256, 200001)})
    with pytest.raises(InvalidRequest, match="IDs that base tokens already use"):
        Tokenizer.from_tiktoken(big, family="gpt-oss")


def test_sentencepiece_model_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.model").write_bytes(b"\n\x0e\n\x05<unk>\x15\x00\x00\x00\x00\x18\x02")
    with pytest.raises(InvalidRequest, match="SentencePiece"):
        Tokenizer.load(tmp_path, family="llama3")


def test_tekken_file_and_directory(tekken_file: Path, tmp_path: Path) -> None:
    tok = Tokenizer.load(tekken_file)
    assert (tok.backend, tok.family, tok.vocab_size) == ("tiktoken", "mistral", 131072)
    assert tok.token_id("[TOOL_CALLS]") == 9
    assert tok.encode("[TOOL_CALLS]").tolist() == [9]
    shutil.copyfile(tekken_file, tmp_path / "tekken.json")
    by_dir = Tokenizer.load(tmp_path)
    assert by_dir.source == str(tmp_path / "tekken.json")
    text = "Bonjour 🫠 [INST]x[/INST]"
    assert by_dir.encode(text).tolist() == tok.encode(text).tolist()


def test_tiktoken_dir_takes_specials_from_tokenizer_config(tmp_path: Path) -> None:
    # The layout Kimi K2 ships: tiktoken.model + tokenizer_config.json listing
    # the added tokens; the family (and so the pattern) is detected from them.
    kimi = family_tokenizer("kimi-k2")
    ranks = {kimi.token_bytes(i) or b"": i for i in range(151643)}
    _write_tiktoken(tmp_path / "tiktoken.model", ranks)
    config = json.loads((family_tokenizer_dir("kimi-k2") / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = Tokenizer.load(tmp_path)
    assert (tok.backend, tok.family) == ("tiktoken", "kimi-k2")
    assert tok.added_tokens == kimi.added_tokens
    text = "<|tool_calls_section_begin|>你好世界 Hello World's"
    assert tok.encode(text).tolist() == kimi.encode(text).tolist()


def test_family_is_detected_for_hf_files_and_can_be_overridden(tiny_model_dir: Path) -> None:
    assert Tokenizer.load(tiny_model_dir).family == "qwen"
    assert Tokenizer.load(tiny_model_dir, family="qwen3.5").family == "qwen3.5"
    ds = family_tokenizer_dir("deepseek-v3.1")
    assert Tokenizer.load(ds / "tokenizer.json").family == "deepseek-v3.1"
    for family in FAMILIES:  # every converted HF dir detects as its family
        assert Tokenizer.load(family_tokenizer_dir(family)).family == family


def test_hf_and_tiktoken_backends_agree_on_qwen(tiny_model_dir: Path) -> None:
    hf = Tokenizer.load(tiny_model_dir)
    tk = family_tokenizer("qwen")
    assert (hf.backend, tk.backend) == ("hf", "tiktoken")
    assert hf.added_tokens == tk.added_tokens
    assert hf.special_tokens == tk.special_tokens
    assert hf.to_hf() is hf.hf
    text = "<|im_start|>user\nGrüße 🫠 天气<|im_end|>\n<think>x</think>"
    assert hf.encode(text).tolist() == tk.encode(text).tolist()
    assert hf.encode_with_offsets(text)[1] == tk.encode_with_offsets(text)[1]
    for i in [0, 9707, 11162, 151645, 151657, 151700]:
        assert hf.token_bytes(i) == tk.token_bytes(i)


def test_from_tiktoken_with_own_tables() -> None:
    ranks = {bytes([i]): i for i in range(256)} | {b"ab": 256, b"abab": 257}
    tok = Tokenizer.from_tiktoken(
        ranks, pattern=r"\S+|\s+", special_tokens={"<s>": 258}, added_tokens={"<t>": 259}
    )
    assert tok.family is None
    assert tok.encode("abab<t>ab<s>").tolist() == [257, 259, 256, 258]
    assert tok.special_tokens == {"<s>": 258}
    assert tok.decode([257, 259, 258], skip_special_tokens=True) == "abab<t>"
    assert tok.decode([257, 1000, 258]) == "abab<s>"  # unknown IDs decode to nothing
    with pytest.raises(InvalidRequest, match="pattern"):
        Tokenizer.from_tiktoken(ranks)
    with pytest.raises(InvalidRequest, match="share a name or an ID"):
        Tokenizer.from_tiktoken(ranks, pattern=r"\S+", special_tokens={"<s>": 258, "<u>": 258})


def test_nfc_offsets_map_back_to_the_original_text() -> None:
    tok = family_tokenizer("qwen3.5")
    text = "x e\u0301 A\u030a \u212b ﬁ 한국어"  # decomposed, Angstrom sign, NFC-stable rest
    ids, offsets = tok.encode_with_offsets(text)
    hf = tok.to_hf().encode(text, add_special_tokens=False)
    assert ids.tolist() == hf.ids
    assert offsets[0] == (0, 1)
    # Every token's span covers exactly the original characters it came from.
    assert [text[a:b] for a, b in offsets][1:3] == [" e\u0301", " A\u030a"]
    assert offsets[-1][1] == len(text)


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(TokenizerNotFoundError, match=r"tekken\.json"):
        Tokenizer.load(tmp_path)
    with pytest.raises(TokenizerNotFoundError):
        Tokenizer.load(tmp_path / "x.tiktoken", family="llama3")
