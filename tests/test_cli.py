"""The ``tokstream`` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokstream._trio._cli import main

DATA = Path(__file__).parent / "data"


def test_decode_prints_every_token_and_the_done(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", str(DATA / "forced_hermes.sse")]) == 0
    out = capsys.readouterr().out.splitlines()
    ids = json.loads((DATA / "forced_hermes.expected.txt").read_text().split(":", 1)[1])
    token_lines = [line for line in out if "\t" in line]
    assert [int(line.split("\t")[0]) for line in token_lines] == [*ids, 151645]
    assert out[len(token_lines)].startswith("done finish_reason=stop")


def test_decode_reports_errors_with_status_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", str(DATA / "midstream_error_internal.sse")]) == 1
    assert "InBandError" in capsys.readouterr().err
