"""The failed-request record: what it keeps, its JSON, clear errors on bad files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import tokstream
from tokstream import CompletionRequest, Error, FailedRequest, InvalidRecord, ReplayComparison
from tokstream._failed._secrets import Scrubber, client_secrets, redact_url
from tokstream._statistics import StreamStatistics

REQUEST = CompletionRequest(
    prompt=[151644, 872, 198, 9707],
    max_tokens=32,
    temperature=0.7,
    top_p=0.9,
    top_k=20,
    seed=1234,
    stop=["</tool_call>"],
    stop_token_ids=[151645],
    priority=-3,
    logprobs=0,
    include_stop_str_in_output=True,
    extra_body={"structured_outputs": {"regex": "a+"}, "logit_bias": {"42": -5.5}},
)


def in_band_error() -> Error:
    exc = tokstream.InBandError(
        "the server reported an error inside the stream (2 tokens in): boom",
        server_message="boom",
        type="BadRequestError",
        code=400,
        url="http://127.0.0.1:8000/v1/completions",
    )
    return Error(
        exc,
        np.array([11, 22], np.int32),
        "hi",
        StreamStatistics(tokens=2, elapsed=1.5, parse_error_previews=("{bad",)),
        np.array([-0.5, np.nan], np.float32),
    )


def make(**kw: object) -> FailedRequest:
    args: dict[str, object] = {
        "body": REQUEST.encode("tiny-qwen"),
        "url": "http://127.0.0.1:8000/v1/completions",
        "model": "tiny-qwen",
        "request_id": "abc",
    }
    args.update(kw)
    return FailedRequest.from_error(in_band_error(), **args)  # type: ignore[arg-type]


def test_the_record_keeps_body_error_attempts_output_and_times() -> None:
    rec = make()
    assert rec.body == REQUEST.encode("tiny-qwen")
    assert rec.error.class_name == "InBandError" and rec.error.server_message == "boom"
    assert rec.error.server_type == "BadRequestError" and rec.error.code == 400
    assert [(a.number, a.error, a.tokens) for a in rec.attempts] == [(1, "InBandError", 2)]
    assert rec.token_ids.tolist() == [11, 22] and rec.text == "hi"
    assert rec.logprobs is not None and rec.logprobs[0] == np.float32(-0.5)
    assert np.isnan(rec.logprobs[1])
    assert (rec.failed_at - rec.started_at).total_seconds() == pytest.approx(1.5)
    assert rec.tokstream_version == tokstream.__version__
    assert rec.base_url == "http://127.0.0.1:8000/v1"
    assert rec.prompt.tolist() == [151644, 872, 198, 9707]


def test_json_round_trip() -> None:
    rec = make()
    back = FailedRequest.from_json(rec.to_json())
    for name in ("url", "model", "request_id", "body", "error", "attempts", "diagnostics", "text"):
        assert getattr(back, name) == getattr(rec, name), name
    assert back.token_ids.tolist() == rec.token_ids.tolist()
    assert back.logprobs is not None and np.isnan(back.logprobs[1])
    assert back.failed_at == rec.failed_at and back.started_at == rec.started_at
    doc = json.loads(rec.to_json())
    assert doc["format"] == "tokstream-failed-request" and doc["version"] == 1
    assert doc["request"] == json.loads(REQUEST.encode("tiny-qwen"))


def test_the_saved_body_rebuilds_the_same_request() -> None:
    rebuilt = make().request()
    assert json.loads(rebuilt.encode("other")) == json.loads(REQUEST.encode("tiny-qwen"))
    assert rebuilt.model == "tiny-qwen" and rebuilt.request_id is None


def test_attempts_from_retries_are_kept() -> None:
    """Retries put ``attempts`` on the Error; the record keeps each one."""
    attempts = (
        tokstream.Attempt(1, "RateLimitError", "HTTP 429 from sk-KEY", 429, 0.0, 0, 2.5),
        tokstream.Attempt(2, "InBandError", "boom", None, 2.5, 0),
    )
    event = dataclasses.replace(in_band_error(), attempts=attempts)
    rec = FailedRequest.from_error(
        event,
        body=REQUEST.encode("m"),
        url="http://h/v1/completions",
        model="m",
        request_id=None,
        secrets=["sk-KEY"],
    )
    assert [
        (a.number, a.error, a.message, a.status, a.waited, a.retry_after) for a in rec.attempts
    ] == [
        (1, "RateLimitError", "HTTP 429 from ***", 429, 0.0, 2.5),
        (2, "InBandError", "boom", None, 2.5, None),
    ]
    assert FailedRequest.from_json(rec.to_json()).attempts == rec.attempts


def test_secrets_never_enter_a_record() -> None:
    secrets = client_secrets(
        "http://alice:pa%40ss-SECRET@127.0.0.1:8000/v1",
        "sk-KEY-SECRET",
        {"X-Api-Key": "hdr-SECRET", "X-Session-ID": "conversation-7"},
    )
    body = CompletionRequest(
        prompt=[1, 2], extra_body={"note": 'key "sk-KEY-SECRET" and pa@ss-SECRET'}
    ).encode("m")
    event = in_band_error()
    event.error.message = "at http://alice:pa%40ss-SECRET@127.0.0.1:8000 with hdr-SECRET"
    event.error.args = (event.error.message,)
    rec = FailedRequest.from_error(
        event,
        body=body,
        url="http://alice:pa%40ss-SECRET@127.0.0.1:8000/v1/completions",
        model="m",
        request_id="sk-KEY-SECRET",
        secrets=secrets,
    )
    data = rec.to_json()
    assert b"SECRET" not in data and b"alice" not in data
    assert rec.url == "http://***@127.0.0.1:8000/v1/completions"
    assert json.loads(data)["request"]["note"] == 'key "***" and ***'
    assert "conversation-7" not in secrets


def test_a_body_without_secrets_is_kept_byte_for_byte() -> None:
    body = REQUEST.encode("m")
    assert Scrubber(["sk-NOT-THERE"]).body(body) is body


def test_redact_url() -> None:
    assert redact_url("http://u:p@h:1/v1") == "http://***@h:1/v1"
    assert redact_url("http://h:1/v1") == "http://h:1/v1"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "no such file"),
        (b"", "it is not JSON"),
        (b'{"format": "tokstream-failed-request", "version": 1, "url": ', "it is not JSON"),
        (b"\xff\xfe garbage", "it is not JSON"),
        (b"[1, 2, 3]", "not a tokstream failed-request record"),
        (b'{"model": "m", "prompt": [1]}', 'no "format": "tokstream-failed-request"'),
        (b'{"format": "tokstream-failed-request", "version": 99}', "written by a newer tokstream"),
        (b'{"format": "tokstream-failed-request", "version": 1}', "it is damaged"),
    ],
)
def test_bad_files_get_a_clear_error(tmp_path: Path, content: bytes | None, needle: str) -> None:
    path = tmp_path / "record.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InvalidRecord) as info:
        FailedRequest.load(path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)
    assert isinstance(info.value, tokstream.InvalidRequest)
    # No decoder exception chained to it: a traceback would show only this error.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_damaged_fields_are_named(tmp_path: Path) -> None:
    doc = json.loads(make().to_json())
    doc["token_ids"] = [1, -2]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidRecord, match=r"damaged .*\$\.token_ids\[1\]"):
        FailedRequest.load(path)
    doc = json.loads(make().to_json())
    doc["request"] = {"model": "m"}
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidRecord, match="no prompt"):
        FailedRequest.load(path)


def test_a_directory_is_not_a_record(tmp_path: Path) -> None:
    with pytest.raises(InvalidRecord, match="is a directory"):
        FailedRequest.load(tmp_path)


@pytest.mark.parametrize(
    ("saved", "replayed", "line"),
    [
        ([1, 2, 3], [1, 2, 3], "identical prefix of 3 tokens"),
        (
            [1, 2, 3],
            [1, 2, 3, 4, 5],
            "identical prefix of 3 tokens (the replay went on for 2 more)",
        ),
        ([1, 2, 3], [1, 9, 3], "first difference at token 1: saved ID 2, replay ID 9"),
        ([1, 2, 3], [1, 2], "identical prefix of 2 tokens, then the replay ended"),
        ([], [4, 5], "the saved request had received no tokens"),
    ],
)
def test_comparison(saved: list[int], replayed: list[int], line: str) -> None:
    comparison = ReplayComparison.of(np.array(saved, np.int32), replayed)
    assert line in comparison.describe()
    assert comparison.reproduced == (saved == replayed[: len(saved)])


def test_from_body_rejects_what_is_not_a_token_request() -> None:
    with pytest.raises(tokstream.InvalidRequest, match="no prompt"):
        CompletionRequest.from_body({"model": "m"})
    with pytest.raises(tokstream.InvalidRequest, match="prompt"):
        CompletionRequest.from_body({"prompt": "hello"})
    with pytest.raises(tokstream.InvalidRequest, match="temperature"):
        CompletionRequest.from_body({"prompt": [1], "temperature": -1})
