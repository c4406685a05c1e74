"""Tokenizer: loading, names, encode/decode, and the incremental detokenizer."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import tokenizers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokstream import (
    IncrementalDetokenizer,
    Tokenizer,
    TokenizerNotFoundError,
    TokstreamError,
    UnknownTokenError,
)

SUPPRESS = [HealthCheck.function_scoped_fixture]


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.load(tiny_model_dir)


@pytest.fixture(scope="module")
def window_tok(tiny_model_dir: Path) -> Tokenizer:
    """The same vocabulary behind a non-ByteLevel decoder object: the window fallback."""
    hf = tokenizers.Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    hf.decoder = tokenizers.decoders.Sequence([tokenizers.decoders.ByteLevel()])
    return Tokenizer(hf)


def test_load_dir_and_file(tiny_model_dir: Path, tok: Tokenizer) -> None:
    by_file = Tokenizer.load(tiny_model_dir / "tokenizer.json")
    assert tok.vocab_size == by_file.vocab_size == 151669
    assert tok.source == str(tiny_model_dir / "tokenizer.json")
    assert tok.encode("Hello world").tolist() == [9707, 1879]


def test_missing_paths_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(TokenizerNotFoundError) as info:
        Tokenizer.load(tmp_path / "nope.json")
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, TokstreamError)
    assert str(tmp_path / "nope.json") in str(info.value)
    assert info.value.path == str(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match=r"has no tokenizer\.json") as info2:
        Tokenizer.load(tmp_path)
    assert info2.value.filename == str(tmp_path / "tokenizer.json")


QWEN_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<tool_call>": 151657,
    "</tool_call>": 151658,
    "<tool_response>": 151665,
    "</tool_response>": 151666,
    "<think>": 151667,
    "</think>": 151668,
}


def test_token_id_by_name(tok: Tokenizer) -> None:
    for name, want in QWEN_IDS.items():
        assert tok.token_id(name) == want
    assert len(tok.added_tokens) == 26
    assert tok.token_id("<|im_end|>") == 151645
    assert tok.token_id("<tool_call>") == 151657
    assert tok.token_id("Hello") == 9707  # base vocabulary too
    assert tok.added_tokens["</think>"] == 151668


def test_unknown_token_name_lists_near_matches(tok: Tokenizer) -> None:
    with pytest.raises(UnknownTokenError) as info:
        tok.token_id("<|im_ende|>")
    err = info.value
    assert isinstance(err, KeyError)
    assert err.name == "<|im_ende|>"
    assert "<|im_end|>" in err.suggestions
    assert "'<|im_end|>'" in str(err) and "'<|im_ende|>'" in str(err)
    with pytest.raises(KeyError, match="unknown token name"):
        tok.token_id("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz")


def test_encode_adds_nothing_and_is_int32(tok: Tokenizer) -> None:
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>")
    assert ids.dtype == np.int32
    assert ids.tolist() == [151644, 872, 198, 6023, 151645]
    assert tok.encode("").tolist() == []


def test_decode_keeps_specials_and_renders_partial_bytes(tok: Tokenizer) -> None:
    assert tok.decode([151657, 9707]) == "<tool_call>Hello"
    assert tok.decode(np.array([151645, 9707], dtype=np.int32), skip_special_tokens=True) == "Hello"
    # forced_partial_utf8_end: "Hi" then half of " 🫠"
    assert tok.decode([13048, 11162, 104]) == "Hi \ufffd"


def test_detokenizer_holds_back_partial_characters(tok: Tokenizer) -> None:
    # 11162 is " " plus the first byte of 🫠: the space is complete, the rest waits.
    d = tok.detokenizer()
    assert [d.feed(i) for i in [13048, 11162, 104, 254]] == ["Hi", " ", "", "🫠"]
    assert d.flush() == ""
    assert [d.feed(i) for i in [13048, 11162, 104]] == ["Hi", " ", ""]
    assert d.flush() == "\ufffd"  # so the total is exactly what decode() renders
    assert d.feed(9707) == "Hello"  # flush reset it


def test_detokenizer_on_recorded_utf8_stream(tok: Tokenizer, data_dir: Path) -> None:
    line = (data_dir / "forced_utf8.expected.txt").read_text()
    ids = json.loads(line.split(":", 1)[1])
    d = tok.detokenizer()
    deltas = [d.feed(i) for i in ids]
    assert all("\ufffd" not in x for x in deltas)
    assert "".join(deltas) + d.flush() == tok.decode(ids)
    assert any(x == "" for x in deltas)  # the recording really splits characters


def test_skip_special_tokens(tok: Tokenizer) -> None:
    ids = tok.encode("<|im_start|>a<tool_call>b<|im_end|>").tolist()
    d = tok.detokenizer(skip_special_tokens=True)
    out = "".join(d.feed(i) for i in ids) + d.flush()
    assert out == tok.decode(ids, skip_special_tokens=True) == "a<tool_call>b"


def test_token_bytes(tok: Tokenizer, window_tok: Tokenizer) -> None:
    assert tok.token_bytes(9707) == b"Hello"
    parts = [tok.token_bytes(i) for i in (11162, 104, 254)]
    assert b"".join(p or b"" for p in parts) == " 🫠".encode()
    assert parts[0] == b" \xf0\x9f"
    assert tok.token_bytes(151645) == b"<|im_end|>"
    assert tok.token_bytes(151700) == b""  # inside the padded embedding
    assert window_tok.token_bytes(9707) is None


# -- properties ---------------------------------------------------------------

_PIECES = [
    "a",
    " the",
    "🫠",
    "👍🏽",
    "天气很好",
    "é",
    "\n",
    "  ",
    "<think>",
    "\U0001d518",
    "Ω",
    "🇫🇷",
]
_TEXTS = st.lists(st.sampled_from(_PIECES) | st.text(max_size=4), max_size=12).map("".join)


def _byte_tokens(tok: Tokenizer) -> list[int]:
    """IDs of tokens that are not whole UTF-8 characters (emoji/CJK pieces)."""
    out = []
    for text in ["🫠", " 🫠", "👍🏽", "\U0001d518", "🇫🇷", "龘", "天气", " 鿏"]:
        out += [i for i in tok.encode(text).tolist() if tok.token_bytes(i) is not None]
    return [i for i in set(out) if _incomplete(tok.token_bytes(i) or b"")]


def _incomplete(b: bytes) -> bool:
    try:
        b.decode()
    except UnicodeDecodeError:
        return True
    return False


@settings(max_examples=300, suppress_health_check=SUPPRESS)
@given(text=_TEXTS)
def test_valid_text_streams_without_replacement_chars(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text).tolist()
    d = tok.detokenizer()
    deltas = [d.feed(i) for i in ids]
    assert "".join(deltas) + d.flush() == tok.decode(ids)
    if "\ufffd" not in text:
        assert all("\ufffd" not in x for x in deltas)


@settings(max_examples=300, suppress_health_check=SUPPRESS)
@given(data=st.data())
def test_random_ids_equal_full_decode(tok: Tokenizer, data: st.DataObject) -> None:
    pool = _byte_tokens(tok)
    assert len(pool) >= 4
    ids = data.draw(
        st.lists(
            st.sampled_from(pool)
            | st.integers(0, tok.vocab_size + 10)
            | st.sampled_from([151645, 151657, 151667, 220, 198]),
            max_size=30,
        )
    )
    d = tok.detokenizer()
    assert "".join(d.feed(i) for i in ids) + d.flush() == tok.decode(ids)


@settings(max_examples=200, suppress_health_check=SUPPRESS)
@given(text=_TEXTS, seed=st.integers(0, 2**32 - 1))
def test_random_splits_give_the_same_text(tok: Tokenizer, text: str, seed: int) -> None:
    ids = tok.encode(text).tolist()
    rng = random.Random(seed)
    d = tok.detokenizer()
    out, i = [], 0
    while i < len(ids):
        k = rng.randint(1, 5)
        out.append(d.feed(ids[i : i + k]))
        i += k
    assert "".join(out) + d.flush() == tok.decode(ids)


@settings(max_examples=150, suppress_health_check=SUPPRESS)
@given(text=_TEXTS)
def test_window_fallback_matches_decode(window_tok: Tokenizer, text: str) -> None:
    ids = window_tok.encode(text).tolist()
    d = IncrementalDetokenizer(window_tok)
    deltas = [d.feed(i) for i in ids]
    assert "".join(deltas) + d.flush() == window_tok.decode(ids)
    if "\ufffd" not in text:
        assert all("\ufffd" not in x for x in deltas)


def test_window_fallback_long_stream_stays_exact(window_tok: Tokenizer) -> None:
    text = "Grüße 🫠 天气 " * 200
    ids = window_tok.encode(text).tolist()
    d = window_tok.detokenizer()
    assert "".join(d.feed(i) for i in ids) + d.flush() == text
    assert len(d._ids) < 100  # the window was trimmed: O(window) per step, not O(history)


@pytest.mark.parametrize("which", ["byte-level", "window"])
def test_feed_accepts_numpy_ids(tok: Tokenizer, window_tok: Tokenizer, which: str) -> None:
    t = tok if which == "byte-level" else window_tok
    ids = t.encode("Grüße 🫠 天气")
    d = t.detokenizer()
    one_by_one = "".join(d.feed(i) for i in ids) + d.flush()  # np.int32 scalars
    whole = d.feed(ids) + d.flush()  # an int32 array
    assert one_by_one == whole == t.decode(ids) == "Grüße 🫠 天气"
