"""The ``tokstream`` command line: stream, chat, inspect and replay, on the public API.

Commands (``tokstream COMMAND --help`` for each):

* ``generate``: one completion, in the live view (``_stream.py``, ``_view.py``)
* ``chat``: a multi-turn conversation with tools (``_chat.py``)
* ``models``, ``health``: what a server serves, and whether it is up (``_server.py``)
* ``decode``: a recorded SSE body, token by token (``_stream.py``)
* ``replay``, ``failed list``, ``failed show``: saved failed requests (``_failed.py``)

Every command fails with one line on stderr and an exit code that tells bad
input, connection, server and stream errors apart (``_common.py``). This
package imports only the public ``tokstream`` API (an import-linter contract
checks it), plus rich for the terminal.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence

import tokstream

from ._chat import chat_command
from ._common import (
    DEFAULT_BASE_URL,
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_MODEL,
    ArgumentParser,
    add_client_options,
    add_sampling_options,
    common_options,
    run_command,
)
from ._failed import ENV_DIR, list_command, replay_command, show_command
from ._server import health_command, models_command
from ._stream import add_output_options, decode_command, generate_command

__all__ = ["main"]

_DESCRIPTION = """\
Stream exact token IDs from a self-hosted vLLM, and watch them arrive.

  tokstream generate --prompt "Hello" --tokenizer .vllm/tiny-qwen
  tokstream generate --ids 151644,872,198 --show-ids --max-tokens 8
  tokstream chat --tokenizer .vllm/tiny-qwen --tools my_tools.py:TOOLS
  tokstream models
  tokstream replay latest
"""

_EPILOG = f"""\
the server:
  --base-url defaults to ${ENV_BASE_URL}, else {DEFAULT_BASE_URL} (where
  `make serve` starts the tiny CPU vLLM); --model to ${ENV_MODEL}, else the
  server's first model; the API key comes from --api-key-env VAR, else
  ${ENV_API_KEY}. Failed requests are saved for `tokstream replay`
  (${ENV_DIR}=off turns that off).

exit codes:
  0 ok   2 bad input   3 connection (never got going)   4 server error
  5 stream broke after it started   130 interrupted   1 a bug (see --debug)
"""


def _parser() -> argparse.ArgumentParser:
    common = common_options()
    formatter = argparse.RawDescriptionHelpFormatter
    parser = ArgumentParser(
        prog="tokstream", description=_DESCRIPTION, epilog=_EPILOG, formatter_class=formatter
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"tokstream {tokstream.__version__}",
        help="print tokstream's version and exit",
    )
    sub = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, summary: str, details: str = "", aliases: Sequence[str] = ()
    ) -> ArgumentParser:
        description = summary[0].upper() + summary[1:] + "."
        if details:
            description += "\n\n" + textwrap.dedent(details).strip()
        p: ArgumentParser = sub.add_parser(
            name,
            parents=[common],
            help=summary,
            description=description,
            formatter_class=formatter,
            aliases=aliases,
        )
        return p

    gen = command(
        "generate",
        "stream one completion and show it live",
        """
        The prompt is text (--prompt, encoded with --tokenizer, sent as is: no chat
        template) or token IDs (--ids). With --tokenizer the reply is parsed as it
        streams: thinking is dimmed and each tool call shows the moment it closes.
        Ends with a stats line on stderr: tokens, time to first token, tokens/s,
        finish reason, and whether the server's echo of the prompt matched.
        """,
        aliases=["stream"],
    )
    prompt = gen.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", metavar="TEXT", help="the prompt as text (needs --tokenizer)")
    prompt.add_argument(
        "--ids",
        "--prompt-ids",
        metavar="FILE|-|IDS",
        help="the prompt as token IDs: a file, - for stdin, or the IDs (151644,872,198)",
    )
    gen.add_argument(
        "--tokenizer", metavar="DIR", help="the model's tokenizer (a model dir or tokenizer.json)"
    )
    add_client_options(gen)
    add_sampling_options(gen)
    add_output_options(gen)
    gen.set_defaults(run=generate_command)

    chat = command(
        "chat",
        "a multi-turn conversation with tools, token-exact",
        """
        Each line on stdin is a user message. Tool calls run the moment they close
        (--tools module:attr: a dict of name to function, a list of functions, or
        one function, in a module or a .py file; async functions run in the turn,
        plain ones in a worker thread). The turn loop goes on until a reply makes no
        call. /save FILE saves the context, --resume FILE restores it; /quit leaves.
        """,
    )
    chat.add_argument(
        "--tokenizer",
        metavar="DIR",
        required=True,
        help="the model's tokenizer; its family picks the chat format",
    )
    chat.add_argument("--system", metavar="TEXT", help="the system message")
    chat.add_argument(
        "--tools", action="append", metavar="MODULE:ATTR", help="tools to offer (repeatable)"
    )
    chat.add_argument("--resume", metavar="FILE", help="continue a context saved with /save")
    chat.add_argument(
        "--chat-format", metavar="NAME", help="override the tokenizer's chat format (e.g. llama3)"
    )
    chat.add_argument(
        "--max-turns", type=int, default=8, metavar="N", help="turns per message (default 8)"
    )
    thinking = chat.add_mutually_exclusive_group()
    thinking.add_argument(
        "--thinking", action="store_const", const=True, help="ask for thinking (the default)"
    )
    thinking.add_argument(
        "--no-thinking",
        dest="thinking",
        action="store_const",
        const=False,
        help="the generation prompt turns thinking off (Qwen3: an empty think block)",
    )
    add_client_options(chat)
    add_sampling_options(chat)
    add_output_options(chat)
    chat.set_defaults(run=chat_command)

    models = command("models", "list the models a server serves")
    add_client_options(models, model=False)
    models.add_argument("--json", action="store_true", help="one JSON object per model")
    models.set_defaults(run=models_command)

    health = command(
        "health",
        "check that a server is up and healthy",
        "Exit code 0 when /health answers 200, 3 when nothing answers, 4 when the server "
        "answers but is not healthy.",
    )
    add_client_options(health, model=False)
    health.set_defaults(run=health_command)

    dec = command(
        "decode",
        "show a recorded SSE body token by token",
        """
        FILE is a response body saved with `curl -sN URL/v1/completions -d @req.json`
        (- reads stdin). One row per token: index, ID and text; with --tokenizer the
        token's own text (the server sends text per chunk), and the reply's tool
        calls as they close.
        """,
    )
    dec.add_argument("file", metavar="FILE|-")
    dec.add_argument("--tokenizer", metavar="DIR", help="the model's tokenizer")
    add_output_options(dec, ids_default=True)
    dec.set_defaults(run=decode_command)

    rp = command(
        "replay",
        "resend a saved failed request and compare the output",
        """
        FILE is a saved record: a path, a name in the store, or `latest`. The reply
        shows in the live view; then the comparison with the saved partial output:
        the first differing token, or "identical prefix of N tokens".
        """,
    )
    rp.add_argument("file", metavar="FILE")
    add_client_options(rp, base_url_default="where it went before", model_default="the saved one")
    rp.add_argument("--prompt-ids", metavar="FILE|-|IDS", help="send these prompt IDs instead")
    rp.add_argument("--max-tokens", type=int, metavar="N", help="send this max_tokens instead")
    rp.add_argument("--tokenizer", metavar="DIR", help="parse the reply (thinking, tool calls)")
    rp.add_argument("--dir", help="the store's directory, to find FILE by name")
    add_output_options(rp)
    rp.add_argument("--ids", dest="show_ids", action="store_true", help="same as --show-ids")
    rp.set_defaults(run=replay_command)

    failed = sub.add_parser(
        "failed", help="list or show saved failed requests", formatter_class=formatter
    )
    fsub = failed.add_subparsers(dest="failed_command", required=True, metavar="{list,show}")
    ls = fsub.add_parser("list", parents=[common], help="list saved failed requests, newest first")
    ls.add_argument("--dir", help="the store's directory")
    ls.set_defaults(run=list_command)
    sh = fsub.add_parser("show", parents=[common], help="show one saved failed request")
    sh.add_argument("file", help="a saved record: a path, a name in the store, or 'latest'")
    sh.add_argument("--dir", help="the store's directory, to find FILE by name")
    sh.add_argument("--json", action="store_true", help="print the record's JSON")
    sh.set_defaults(run=show_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    return run_command(args.run, args)


if __name__ == "__main__":
    sys.exit(main())
