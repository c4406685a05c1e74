"""The public testing kit: its namespace and its import isolation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tokstream
import tokstream.testing

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent


def test_all_matches_public_names_sorted_and_documented() -> None:
    kit = tokstream.testing
    public = {
        name
        for name in vars(kit)
        if not name.startswith("_") and not isinstance(getattr(kit, name), type(kit))
    }
    assert set(kit.__all__) == public - {"annotations"}
    assert list(kit.__all__) == sorted(kit.__all__)
    for name in kit.__all__:
        obj = getattr(kit, name)
        if callable(obj):
            assert obj.__doc__, name
            assert obj.__module__.startswith("tokstream.testing._"), name
    for heading in ("Install", "Start a server", "Force exact"):
        assert heading in (kit.__doc__ or ""), heading


def test_import_tokstream_does_not_import_the_kit() -> None:
    code = (
        "import sys, tokstream, tokstream.core; "
        "assert 'tokstream.testing' not in sys.modules, 'tokstream imported its testing kit'; "
        "import tokstream.testing; "
        "leaked = sorted(m for m in ('pytest', 'tiktoken', 'tokenizers', 'jinja2') "
        "if m in sys.modules); "
        "assert not leaked, f'tokstream.testing imported {leaked}'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
