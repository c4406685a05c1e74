"""Every code block in the README is run by a test, or is an excerpt of an example.

:func:`test_every_block_is_checked` fails on a block that no check claims, so a
new block needs a check (:data:`PYTHON`, :data:`CAPTURES`, the shell-line
rules of :func:`test_shell_lines_name_real_commands`, or an excerpt of
``examples/``). Python blocks run as written, in a subprocess from the
repository root; the ones that need a server read ``$TOKSTREAM_BASE_URL``
(which ``make serve`` prints), set here to the session's live vLLM.
``console`` blocks are captures: each is re-run and must print the same,
up to ports, timings, dates and file names.
"""

from __future__ import annotations

import doctest
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

import tokstream
from tokstream.cli import _parser
from tokstream.testing import VLLMServer, open_replay_server

from .cli_helpers import prompt_of

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples"


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int


def blocks() -> list[Block]:
    text = README.read_text()
    return [
        Block(m.group(1), m.group(2), text[: m.start()].count("\n") + 1)
        for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S)
    ]


def block(needle: str) -> Block:
    (found,) = [b for b in blocks() if needle in b.text]
    return found


PYTHON = {
    "client.stream(prompt, max_tokens=16": "test_quickstart_runs_as_written",
    "ctx.append_reply(done)": "test_context_snippet_runs_as_written",
    "extra_body=forcing_body(ids)": "test_forcing_snippet_runs_as_written",
    "# my_tools.py": "test_cli_captures_are_what_the_cli_prints",
    "parser.receive_tokens": "test_parser_snippet_runs_as_written",
    "FailedRequest.load(path)": "test_nothing_lost_replay_snippet_runs_as_written",
    'server.url("status=503,text")': "test_retries_snippet_runs_as_written",
    "stall=forced_hermes,3": "test_testing_kit_replay_snippet_runs_as_written",
    ">>> tok = Tokenizer.load(": "test_tokenizer_doctest_runs",
}
"""A unique needle of each Python (and pycon) block, and the test that runs it."""

CAPTURES = ("tokstream chat", "tokstream replay latest", "tokstream failed list")
"""The first command of each ``console`` capture."""


def excerpt_of(text: str) -> Path | None:
    """The example a block is copied from, verbatim (up to indentation), if any."""
    wanted = textwrap.dedent(text)
    for path in sorted(EXAMPLES.glob("*.py")):
        source = path.read_text()
        for indent in range(0, 13, 4):
            if textwrap.indent(wanted, " " * indent) in source:
                return path
    return None


def test_every_block_is_checked() -> None:
    for b in blocks():
        where = f"README.md:{b.line}"
        if b.lang == "bash":
            continue  # test_shell_lines_name_real_commands
        if b.lang == "console":
            first = b.text.splitlines()[0]
            assert sum(c in first for c in CAPTURES) == 1, f"{where}: an unchecked capture"
        elif b.lang in ("python", "pycon"):
            claims = [n for n in PYTHON if n in b.text]
            assert len(claims) == 1 or (not claims and excerpt_of(b.text)), (
                f"{where}: no test runs this block and it is no excerpt of examples/"
            )
        else:
            raise AssertionError(f"{where}: a ```{b.lang} block: tag it python/console/bash")


def test_readme_names_the_two_commands_and_the_cli() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text and "make help" in text
    for command in ("generate", "chat", "models", "health", "decode", "replay", "failed"):
        assert f"tokstream {command}" in text
    # Words for users, not the project's own bookkeeping.
    for phrase in ("a later performance issue", "this project targets", "issue 9"):
        assert phrase not in text


def test_excerpts_come_from_examples() -> None:
    excerpts = [b for b in blocks() if b.lang == "python" and not any(n in b.text for n in PYTHON)]
    assert excerpts, "the start_stream block is an excerpt of examples/cancel.py"
    for b in excerpts:
        assert excerpt_of(b.text) == EXAMPLES / "cancel.py", b.text


# -- shell lines --------------------------------------------------------------------

EXTERNAL = frozenset(("vllm", "vllm-router", "curl", "hf", "pip"))
"""Commands of other projects a README line may show."""


def shell_lines() -> list[tuple[int, str]]:
    lines = []
    for b in blocks():
        if b.lang != "bash":
            continue
        joined = b.text.replace("\\\n", " ")
        for k, raw in enumerate(joined.splitlines()):
            line = raw.split(" # ")[0].strip() if not raw.lstrip().startswith("#") else ""
            if line:
                lines.append((b.line + 1 + k, line))
    return lines


def test_shell_lines_name_real_commands() -> None:
    parser = _parser()
    for line_no, line in shell_lines():
        words = shlex.split(line)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words = words[1:]  # VAR=value prefixes
        where = f"README.md:{line_no}: {line}"
        if words[0] == "make":
            # A dry run: the target and its variables exist (nothing is executed).
            run = subprocess.run(
                ["make", "-n", "-C", str(ROOT), *words[1:]], capture_output=True, text=True
            )
            assert run.returncode == 0, f"{where}: {run.stderr}"
        elif words[0] == "tokstream":
            parser.parse_args(words[1:])  # every flag exists (a bad one exits 2)
        elif words[0].endswith("/python") and words[1].startswith("examples/"):
            assert (ROOT / words[1]).is_file(), where
        else:
            assert words[0] in EXTERNAL, f"{where}: an unknown command"


# -- Python blocks, run as written ---------------------------------------------------


def run_block(needle: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", block(needle).text],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.vllm
def test_quickstart_runs_as_written(vllm_server: VLLMServer) -> None:
    assert 'BASE_URL = os.environ.get("TOKSTREAM_BASE_URL", "http://127.0.0.1:8000/v1")' in (
        block("client.stream(prompt, max_tokens=16").text
    )
    env = {"TOKSTREAM_BASE_URL": vllm_server.base_url}
    proc = run_block("client.stream(prompt, max_tokens=16", env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 17, proc.stdout  # 16 tokens (max_tokens) + the Done line
    assert lines[-1].startswith("length Usage(prompt_tokens=9, completion_tokens=16")
    assert "failed" not in proc.stdout


@pytest.mark.vllm
def test_context_snippet_runs_as_written(vllm_server: VLLMServer) -> None:
    proc = run_block("ctx.append_reply(done)", {"TOKSTREAM_BASE_URL": vllm_server.base_url})
    assert proc.returncode == 0, proc.stderr
    roles, sampled = proc.stdout.rsplit(" ", 1)
    assert roles == "['system', 'user', 'assistant', 'tool']"
    assert 1 <= int(sampled) <= 32  # the reply's IDs, stop token included
    assert f"It prints `{roles} 32`" in README.read_text()


@pytest.mark.vllm
def test_forcing_snippet_runs_as_written(vllm_server: VLLMServer) -> None:
    proc = run_block("extra_body=forcing_body(ids)", {"TOKSTREAM_BASE_URL": vllm_server.base_url})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "get_weather {'city': 'Paris'} -> sunny in Paris\n"
    assert f"It prints `{proc.stdout.strip()}`" in README.read_text()


def test_parser_snippet_runs_as_written() -> None:
    proc = run_block("parser.receive_tokens")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    thinking = [eval(line.split(" ", 1)[1]) for line in lines if line.startswith("Thinking")]
    assert "".join(thinking).strip() == "plan"
    call = lines.index("call get_weather {'city': 'Paris'}")
    assert lines[call - 1].startswith("TextDelta")  # "Hello " came before the call
    assert lines[-1] == "['framing', 'thinking', 'text', 'tool_call', 'stop', 'framing']"


def test_testing_kit_replay_snippet_runs_as_written() -> None:
    # The testing-kit section's snippet: a recorded stream that stalls after 3 events.
    proc = run_block("stall=forced_hermes,3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "token 151667",
        "token 198",
        "token 10393",
        "StallTimeout [151667, 198, 10393]",
    ]


def test_nothing_lost_replay_snippet_runs_as_written(tmp_path: Path) -> None:
    # "Nothing lost": a dropped stream is saved, loaded and replayed in full.
    proc = run_block("FailedRequest.load(path)", {"TOKSTREAM_FAILED_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "RemoteDisconnected 5 tokens",
        "identical prefix of 5 tokens (the replay went on for 23 more)",
    ]
    assert len(os.listdir(tmp_path)) == 1
    text = README.read_text()
    for needle in ("TOKSTREAM_FAILED_DIR", "$XDG_STATE_HOME/tokstream/failed/", "tokstream replay"):
        assert needle in text


def test_retries_snippet_runs_as_written() -> None:
    # "Retries": a 503 on every attempt is tried 4 times, with full-jitter
    # backoff bounded by 0.25 s doubling, and the final error says so.
    proc = run_block('server.url("status=503,text")')
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "3 retries"
    assert lines[1] == "1 InternalServerError 503 waited 0.00s"
    for n, (line, bound) in enumerate(zip(lines[2:5], (0.25, 0.5, 1.0), strict=True), 2):
        head, waited = line.rsplit(" ", 1)
        assert head == f"{n} InternalServerError 503 waited"
        assert 0 <= float(waited.rstrip("s")) <= bound
    (message,) = lines[5:]
    assert message.startswith("HTTP 503 from http://127.0.0.1:")
    assert "/v1/completions (request_id=srv-123): Internal Server Error [4 attempts;" in message
    assert message.endswith(
        "earlier failures: #1 InternalServerError (HTTP 503), #2 InternalServerError "
        "(HTTP 503), #3 InternalServerError (HTTP 503); gave up: RetryPolicy.attempts=4 "
        "attempts were made]"
    )

    # The README shows the same message (up to the port and the random waits).
    def normal(text: str) -> str:
        return re.sub(r"\d+\.\d+s", "Xs", re.sub(r"127\.0\.0\.1:(\d+|PORT)", "HOST", text))

    assert normal(message) in normal(" ".join(README.read_text().split()))


def test_the_family_table_lists_every_family_and_format() -> None:
    # "Model families": a row per Tokenizer.family, and every registered reply
    # format and chat format named in the table, so adding one means saying
    # what it is checked against.
    import tokstream.chat
    from tokstream._tokenizer._families import FAMILIES
    from tokstream.chat import _FORMATS
    from tokstream.core.parser import registered_reply_formats

    text = README.read_text()
    section = text[text.index("## Model families") : text.index("## Testing your agent")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert sorted(row.split("`")[1] for row in rows) == sorted(FAMILIES)
    table = "\n".join(rows)
    for name in [*registered_reply_formats(), *_FORMATS, *tokstream.chat.FAMILY_FORMATS.values()]:
        assert f"`{name}`" in table, name


def test_tokenizer_doctest_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Meta's own tokenizer.model for Llama 3, as the llama-models package ships it.
    spec = importlib.util.find_spec("llama_models")
    assert spec is not None and spec.origin is not None
    meta_file = Path(spec.origin).parent / "llama3" / "tokenizer.model"
    text = block(">>> tok = Tokenizer.load(").text.replace(
        "Llama-3.1-8B-Instruct/original/tokenizer.model", str(meta_file)
    )
    monkeypatch.chdir(tmp_path)  # it writes tokenizer.json
    test = doctest.DocTestParser().get_doctest(text, {}, "README", "README.md", 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False) == doctest.TestResults(failed=0, attempted=6)
    written = tokstream.Tokenizer.load(tmp_path / "tokenizer.json")
    assert written.token_id("<|python_tag|>") == 128010


# -- console captures: re-run, compare -----------------------------------------------


def normalize(text: str) -> str:
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
    text = re.sub(r"ttft \d+\.\d+ s · [\d.]+ tok/s · \d+\.\d+ s", "ttft T s · R tok/s · T s", text)
    text = re.sub(r"\d{8}T\d{6}\.\d{6}Z-(\w+)-\d+-\d+\.json", r"STAMP-\1.json", text)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", "YYYY-MM-DD HH:MM:SS.ffffff", text)
    return re.sub(r"saved in \S+, newest", "saved in DIR, newest", text)


async def run_capture(
    capture: Block, urls: dict[str, str], cwd: Path, tokenizer: Path, store: Path
) -> str:
    """Run a capture's command line (``$ [echo TEXT |] tokstream ...``) as it is shown."""
    command = capture.text.splitlines()[0].removeprefix("$ ")
    stdin = b""
    if " | " in command:
        echo, command = command.split(" | ", 1)
        stdin = (shlex.split(echo)[1] + "\n").encode()
    args = []
    for word in shlex.split(command)[1:]:
        if word.startswith("http://127.0.0.1:"):
            scenario = word.split("/", 3)[3].removesuffix("/v1")
            word = urls[scenario]
        args.append(word.replace(".vllm/tiny-qwen", str(tokenizer)))
    result = await trio.run_process(
        [sys.executable, "-m", "tokstream", *args],
        stdin=stdin,
        capture_stdout=True,
        stderr=subprocess.STDOUT,  # one pipe: the order a terminal shows
        check=False,
        cwd=cwd,
        env={**os.environ, "TOKSTREAM_FAILED_DIR": str(store), "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stdout.decode()
    return f"$ {capture.text.splitlines()[0].removeprefix('$ ')}\n" + result.stdout.decode()


async def test_cli_captures_are_what_the_cli_prints(tmp_path: Path, tiny_model_dir: Path) -> None:
    (tmp_path / "my_tools.py").write_text(block("# my_tools.py").text)
    store = tmp_path / "failed"
    async with open_replay_server(ROOT / "tests" / "data") as server:
        urls = {s: server.url(s) for s in ("replay=readme_chat", "replay=forced_hermes")}
        # Two failures, the dropped stream last: what `failed list` and `replay latest` see.
        for scenario in ("sse=oov_token_id_beyond_embedding", "close=forced_hermes,7"):
            async with tokstream.Client(
                server.url(scenario), model="tiny-qwen", failed_requests=store
            ) as client:
                async with client.stream(prompt_of("forced_hermes"), max_tokens=256) as events:
                    async for _ in events:
                        pass
        for first in CAPTURES:
            (capture,) = [b for b in blocks() if b.lang == "console" and first in b.text]
            got = await run_capture(capture, urls, tmp_path, tiny_model_dir, store)
            assert normalize(got) == normalize(capture.text), got
