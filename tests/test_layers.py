"""The sans-IO core is usable where trio and httpx are not importable (as h11 is).

Each check runs in a fresh interpreter with ``trio``, ``httpx``, ``httpcore``,
``h11`` and ``anyio`` blocked in ``sys.modules`` (an import of them raises
``ImportError``), then drives the core synchronously: SSE + vLLM chunk decoding
of a recorded stream, request encoding, the response parser, and the context
tree. import-linter checks the same boundary statically (``make lint``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

DATA = Path(__file__).parent / "data"

_BLOCK = """
import sys
for name in ("trio", "httpx", "httpcore", "h11", "anyio"):
    sys.modules[name] = None  # any import of it now raises ImportError
"""


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCK + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_blocking_really_blocks() -> None:
    out = _run(
        """
        try:
            import trio
        except ImportError:
            print("blocked")
        """
    )
    assert out.strip() == "blocked"


def test_core_decodes_a_recorded_stream_without_trio_or_httpx() -> None:
    out = _run(
        f"""
        import tokstream.core as core
        from tokstream import Done, Token
        body = open({str(DATA / "forced_hermes.sse")!r}, "rb").read()
        decoder = core.StreamDecoder()
        events = []
        for i in range(0, len(body), 7):
            events += decoder.feed(body[i : i + 7])
        events += decoder.finish()
        tokens = [e for e in events if isinstance(e, Token)]
        done = events[-1]
        assert isinstance(done, Done), done
        assert done.token_ids.tolist() == [t.id for t in tokens]
        body = core.CompletionRequest([1, 2, 3], max_tokens=4).encode("m")
        assert body.startswith(b'{{"prompt":[1,2,3]'), body
        print(len(tokens), done.finish_reason, "trio" in sys.modules and sys.modules["trio"])
        """
    )
    n, reason, trio_loaded = out.split()
    assert int(n) > 10 and reason == "stop" and trio_loaded == "None"


def test_parser_and_context_without_trio_or_httpx(tiny_model_dir: Path) -> None:
    out = _run(
        f"""
        import tokstream
        tok = tokstream.Tokenizer.load({str(tiny_model_dir)!r})
        ctx = tokstream.Context(tok)
        ctx.add_user("Weather in Paris?")
        ids = tok.encode(
            '<tool_call>\\n{{"name": "get_weather", "arguments": {{"city": "Paris"}}}}\\n'
            "</tool_call><|im_end|>"
        )
        parsed = tokstream.parse_output(ids, tokenizer=tok)
        message = ctx.append_reply(ids)
        assert [leaf.kind for leaf in message.leaves if leaf.sampled] == ["tool_call", "stop"]
        assert parsed.tool_calls[0].arguments == {{"city": "Paris"}}, parsed
        print(len(ctx.messages), parsed.tool_calls[0].name)
        """
    )
    assert out.split() == ["2", "get_weather"]
