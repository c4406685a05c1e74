"""``import tokstream`` and one idle ``Client`` load only what a stream needs.

Issue 9's footprint target (row 8 of ``make bench``): every public name but the
events, statistics and exceptions loads on first use, and numpy (about 12 MiB
of RSS) loads when a module first uses it, through ``tokstream._lazy``. Each
check runs in a fresh interpreter, since this test process has loaded
everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

import tokstream
from tokstream import _lazy


def _run(code: str) -> object:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


_LOADED = """
import json, sys
def loaded():
    return sorted(m for m in sys.modules if m == "numpy" or m.startswith("tokstream"))
"""


def test_an_idle_client_loads_neither_numpy_nor_the_parser() -> None:
    out = _run(
        _LOADED
        + textwrap.dedent(
            """
        import tokstream
        client = tokstream.Client("http://127.0.0.1:9/v1", model="m")
        from tokstream import _events, _lazy
        from tokstream.core import _request
        print(json.dumps({
            "modules": loaded(),
            "events_np": _lazy.is_loaded(_events.np),
            "request_np": _lazy.is_loaded(_request.np),
        }))
        """
        )
    )
    assert isinstance(out, dict)
    modules = set(out["modules"])
    assert "tokstream._trio._client" in modules  # the client really was made
    assert "numpy" not in modules
    assert out["events_np"] is False and out["request_np"] is False
    for heavy in (
        "tokstream.core.parser",
        "tokstream.context",
        "tokstream.chat",
        "tokstream._tokenizer",
        "tokstream._trio._reply",
        "tokstream._trio._turns",
    ):
        assert heavy not in modules, heavy


def test_first_use_loads_numpy_and_rebinds_every_module() -> None:
    out = _run(
        _LOADED
        + textwrap.dedent(
            """
        import tokstream
        from tokstream import _events, _lazy
        from tokstream.core import _request, _wire
        before = "numpy" in sys.modules
        body = tokstream.CompletionRequest([1, 22, 333], max_tokens=4).encode("m")
        done = tokstream.Done("stop")
        np = sys.modules["numpy"]
        print(json.dumps({
            "before": before,
            "body": body.decode(),
            "empty": [done.token_ids.dtype.name, done.token_ids.size,
                      done.token_ids.flags.writeable],
            "rebound": [m.np is np for m in (_events, _request, _wire)],
        }))
        """
        )
    )
    assert isinstance(out, dict)
    assert out["before"] is False
    assert json.loads(out["body"])["prompt"] == [1, 22, 333]
    assert out["empty"] == ["int32", 0, False]
    # Every module that asked for numpy now holds the real module: no stand-in left.
    assert out["rebound"] == [True, True, True]


def test_threads_racing_the_first_use_all_see_numpy() -> None:
    out = _run(
        """
        import json, threading
        from tokstream.core import _request
        barrier = threading.Barrier(8)
        results = []
        def use():
            barrier.wait()
            results.append(int(_request.np.arange(5).sum()))
        threads = [threading.Thread(target=use) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(json.dumps(results))
        """
    )
    assert out == [10] * 8


def test_every_public_name_resolves_in_a_fresh_process() -> None:
    out = _run(
        """
        import json, tokstream
        listed = set(dir(tokstream))  # before any lazy name is resolved
        missing = []
        for name in tokstream.__all__:
            try:
                getattr(tokstream, name)
            except AttributeError:
                missing.append(name)
        print(json.dumps({"missing": missing, "dir": sorted(set(tokstream.__all__) - listed)}))
        """
    )
    assert out == {"missing": [], "dir": []}


def test_public_names_are_the_defining_modules_objects() -> None:
    from tokstream._trio import _client, _reply
    from tokstream.core import parser

    for name in tokstream.__all__:
        getattr(tokstream, name)
    assert tokstream.Client is _client.Client
    assert tokstream.open_reply is _reply.open_reply
    assert tokstream.ResponseParser is parser.ResponseParser is tokstream.core.ResponseParser
    assert tokstream._trio.Client is _client.Client
    assert tokstream._trio.ClientStatistics is tokstream.ClientStatistics


def test_unknown_names_still_raise_attribute_error() -> None:
    for module in (tokstream, tokstream._trio, tokstream.core):
        try:
            module.no_such_name  # type: ignore[attr-defined]  # noqa: B018
        except AttributeError as exc:
            assert "no_such_name" in str(exc)
        else:
            raise AssertionError(module)


def test_subpackages_still_reachable_as_attributes() -> None:
    out = _run(
        """
        import json, tokstream, tokstream.core
        print(json.dumps([tokstream.context.__name__, tokstream.chat.__name__,
                          tokstream.core.parser.__name__]))
        """
    )
    assert out == ["tokstream.context", "tokstream.chat", "tokstream.core.parser"]


def test_lazy_module_returns_an_imported_module_itself() -> None:
    namespace: dict[str, object] = {}
    assert _lazy.lazy_module("numpy", namespace) is np
    assert _lazy.is_loaded(np)


def test_the_parser_alone_finds_the_chat_formats() -> None:
    # ``import tokstream`` used to import tokstream.chat, which registers the
    # built-in reply formats; the parser now asks for them on first lookup.
    out = _run(
        """
        import json, sys
        from tokstream.core.parser import registered_reply_formats
        from tokstream.core.parser._format import get_reply_format
        before = "tokstream.chat" in sys.modules
        print(json.dumps([before, get_reply_format("hermes").name,
                          "qwen3_coder" in registered_reply_formats()]))
        """
    )
    assert out == [False, "hermes", True]


def test_a_public_response_parser_in_a_fresh_process(tiny_model_dir: object) -> None:
    out = _run(
        f"""
        import json, tokstream
        tok = tokstream.Tokenizer.load({str(tiny_model_dir)!r})
        parser = tokstream.ResponseParser(tok, tool_format="hermes")  # failed: no formats
        print(json.dumps(type(parser).__name__))
        """
    )
    assert out == "ResponseParser"
