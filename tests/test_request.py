"""CompletionRequest: local validation before any I/O, and the body it encodes."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tokstream import CompletionRequest, InvalidRequest
from tokstream.core._request import encode_token_ids


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"prompt": []}, "invalid prompt=[]: is empty"),
        ({"prompt": np.zeros(0, np.int32)}, "is empty"),
        ({"prompt": "hello"}, "must be token IDs"),
        ({"prompt": [1, 2.5]}, "invalid prompt[1]=2.5: token IDs must be integers"),
        ({"prompt": [1, True]}, "prompt[1]=True"),
        ({"prompt": [1, -3]}, "prompt[1]=-3: token IDs must be non-negative"),
        ({"prompt": np.array([4, -1])}, "prompt[1]=-1"),
        ({"prompt": np.array([1.0, 2.0])}, "dtype float64"),
        ({"prompt": np.array([[1, 2]])}, "one-dimensional"),
        ({"prompt": [1], "temperature": float("nan")}, "temperature=nan: must not be NaN"),
        ({"prompt": [1], "temperature": -0.5}, "temperature=-0.5"),
        ({"prompt": [1], "temperature": "hot"}, "temperature='hot': must be a number"),
        ({"prompt": [1], "top_p": 0}, "top_p=0: must be in (0, 1]"),
        ({"prompt": [1], "top_p": 1.5}, "top_p=1.5"),
        ({"prompt": [1], "top_k": -2}, "top_k=-2: must be -1 or 0 (disabled) or >= 1"),
        ({"prompt": [1], "top_k": 2.0}, "top_k=2.0: must be an int"),
        ({"prompt": [1], "max_tokens": 0}, "max_tokens=0: must be at least 1"),
        ({"prompt": [1], "priority": 1.5}, "priority=1.5: must be an int"),
        ({"prompt": [1], "priority": "high"}, "priority='high'"),
        ({"prompt": [1], "n": 2}, "n=2: is unsupported"),
        ({"prompt": [1], "min_p": 2}, "min_p=2"),
        ({"prompt": [1], "stop": [""]}, "stop[0]=''"),
        ({"prompt": [1], "stop_token_ids": [-1]}, "stop_token_ids[0]=-1"),
        ({"prompt": [1], "extra_body": {"stream": False}}, "extra_body['stream']=False"),
        ({"prompt": [1], "logprobs": -1}, "logprobs=-1"),
    ],
)
def test_validation_names_the_field_and_value(fields: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        CompletionRequest(**fields)  # type: ignore[arg-type]
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)


def test_out_of_vocabulary_needs_the_vocab_size() -> None:
    req = CompletionRequest(prompt=[5, 151936])
    req.check_vocab(151937)
    with pytest.raises(InvalidRequest, match=r"prompt\[1\]=151936: .*vocab_size=151936"):
        req.check_vocab(151936)


def test_only_set_fields_are_sent_plus_the_streaming_ones() -> None:
    body = json.loads(CompletionRequest(prompt=[1, 2]).encode("tiny"))
    assert body == {
        "prompt": [1, 2],
        "model": "tiny",
        "max_tokens": 16,
        "skip_special_tokens": False,
        "stream": True,
        "return_token_ids": True,
        "stream_options": {"include_usage": True},
    }


def test_every_field_is_sent_when_set() -> None:
    req = CompletionRequest(
        prompt=np.array([7], dtype=np.uint16),
        model="m2",
        max_tokens=None,
        temperature=0,
        top_p=1,
        top_k=-1,
        min_p=0.1,
        seed=3,
        stop="</tool_call>",
        stop_token_ids=[151658],
        skip_special_tokens=True,
        include_stop_str_in_output=True,
        priority=-5,
        logprobs=0,
        request_id="abc",
        extra_body={"structured_outputs": {"regex": "a+"}, "logit_bias": {"151643": -100}},
    )
    body = json.loads(req.encode("default"))
    assert body["model"] == "m2" and body["max_tokens"] == 16  # explicit None means 16
    assert body["temperature"] == 0.0 and body["top_p"] == 1.0 and body["top_k"] == -1
    assert body["stop"] == ["</tool_call>"] and body["stop_token_ids"] == [151658]
    assert body["priority"] == -5 and body["logprobs"] == 0 and body["seed"] == 3
    assert body["skip_special_tokens"] is True and body["include_stop_str_in_output"] is True
    assert body["structured_outputs"] == {"regex": "a+"}
    assert "request_id" not in body  # it is a header


def test_build_overrides_a_request() -> None:
    base = CompletionRequest(prompt=[1, 2], max_tokens=8)
    assert CompletionRequest.build(base) is base
    new = CompletionRequest.build(base, max_tokens=9, priority=1)
    assert (new.max_tokens, new.priority, new.prompt.tolist()) == (9, 1, [1, 2])
    with pytest.raises(InvalidRequest, match="max_tokens=0"):
        CompletionRequest.build(base, max_tokens=0)


@given(
    hnp.arrays(
        dtype=st.sampled_from([np.int32, np.int64, np.uint32]),
        shape=st.integers(1, 300),
        elements=st.integers(0, 2**31 - 1),
    )
)
def test_numpy_encoding_round_trips(ids: np.ndarray) -> None:  # type: ignore[type-arg]
    assert json.loads(encode_token_ids(ids)) == ids.tolist()
    body = json.loads(CompletionRequest(prompt=ids).encode("m"))
    assert body["prompt"] == ids.tolist()


def test_numpy_encoding_builds_no_python_object_per_token() -> None:
    """A Python int per ID alone would take 28 B x 32k = 900 KB; the body is ~230 KB."""
    ids = (np.arange(32768, dtype=np.int32) * 4) % 151936
    req = CompletionRequest(prompt=ids)
    req.encode("m")  # warm the scratch buffers
    tracemalloc.start()
    try:
        body = req.encode("m")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert json.loads(body)["prompt"] == ids.tolist()
    assert peak < 2.5 * len(body), (peak, len(body))


def test_nan_and_inf_temperature_are_rejected_locally() -> None:
    with pytest.raises(InvalidRequest):
        CompletionRequest(prompt=[1], temperature=math.inf)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"prompt": [1, 2**64]}, "prompt[1]=18446744073709551616: does not fit in int32"),
        ({"prompt": [1, -(2**70)]}, "token IDs must be non-negative"),
        ({"prompt": [1], "n": 1.0}, "n=1.0: must be an int"),
        ({"prompt": [1], "n": True}, "n=True: must be an int"),
        ({"prompt": [1], "extra_body": {"max_tokens": 0}}, "extra_body['max_tokens']=0"),
        ({"prompt": [1], "extra_body": {"priority": 1.5}}, "is a request field"),
    ],
)
def test_validation_holes_found_in_review(fields: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        CompletionRequest(**fields)  # type: ignore[arg-type]
    assert needle in str(info.value)
