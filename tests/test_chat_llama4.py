"""Llama 4 framing == ``llama_models``' Llama 4 ``ChatFormat``, token for token.

The reference is ``llama_models`` 0.3.0's ``llama4/chat_format.py``
(``encode_dialog_prompt`` with ``ToolPromptFormat.python_list``) and its own
tokenizer (``llama4/tokenizer.model``, the kit's ``llama4`` vocabulary). That
module imports torch and torchvision for images only, which the test venv
does not have: it runs in a subprocess with both replaced by empty modules
(the text path never touches them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tokstream
from tokstream import Context, InvalidRequest, Tokenizer
from tokstream.chat import LLAMA4_PYTHONIC, Llama4Format
from tokstream.testing import family_tokenizer

REFERENCE = r"""
import json, sys, types
for name in ("torch", "torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["torch"].Tensor = object
sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
from llama_models.datatypes import RawMessage, StopReason, ToolCall, ToolPromptFormat
from llama_models.llama4.chat_format import ChatFormat
from llama_models.llama4.tokenizer import Tokenizer

ref = ChatFormat(Tokenizer.get_instance())
out = []
for dialog in json.load(sys.stdin):
    msgs = []
    for m in dialog:
        calls = [ToolCall(call_id=str(i), tool_name=c["name"], arguments=c["arguments"])
                 for i, c in enumerate(m.get("tool_calls", []))]
        stop = StopReason.end_of_message if calls else StopReason.end_of_turn
        msgs.append(RawMessage(role=m["role"], content=m["content"], stop_reason=stop,
                               tool_calls=calls))
    out.append(ref.encode_dialog_prompt(msgs, ToolPromptFormat.python_list).tokens)
json.dump(out, sys.stdout)
"""


def reference(dialogs: list[list[dict[str, Any]]]) -> list[list[int]]:
    """``llama_models``' IDs for each dialog (generation prompt included)."""
    done = subprocess.run(
        [sys.executable, "-c", REFERENCE],
        input=json.dumps(dialogs),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return list(json.loads(done.stdout))


@pytest.fixture(scope="module")
def tok(vllm_home: Path) -> Tokenizer:
    return family_tokenizer("llama4", home=vllm_home)


def test_a_tool_loop_matches_llama_models(tok: Tokenizer) -> None:
    ctx = Context(tok)  # the llama4 family picks Llama 4 framing
    assert isinstance(ctx.chat_format, Llama4Format)
    assert ctx.chat_format.reply_format() is LLAMA4_PYTHONIC
    weather = {"name": "get_weather", "arguments": {"city": "Paris", "days": 3, "hourly": True}}
    steps: list[tuple[str, dict[str, Any]]] = [
        ("system", {"role": "system", "content": "Answer with tools."}),
        ("user", {"role": "user", "content": "Weather in Paris and 東京?"}),
        ("assistant", {"role": "assistant", "content": "Checking.", "tool_calls": [weather]}),
        ("tool", {"role": "tool", "content": '{"temp": 21}'}),
        ("assistant", {"role": "assistant", "content": "21 °C in Paris."}),
        ("user", {"role": "user", "content": "And tomorrow?"}),
    ]
    dialogs = []
    prompts = []
    for i, (role, m) in enumerate(steps):
        if role == "system":
            ctx.add_system(m["content"])
        elif role == "user":
            ctx.add_user(m["content"])
        elif role == "tool":
            ctx.add_tool(m["content"], name="get_weather")
        else:
            ctx.add_assistant(m["content"], tool_calls=m.get("tool_calls"))
        probe = Context.from_json(ctx.to_json(), tok)
        probe.begin_assistant()
        prompts.append(probe.prompt_ids().tolist())
        dialogs.append([s[1] for s in steps[: i + 1]])
    # A sampled reply: two pythonic calls, as the model writes them.
    calls = [
        {"name": "get_weather", "arguments": {"city": "東京", "days": 1}},
        {"name": "noop", "arguments": {}},
    ]
    dialogs.append(
        [s[1] for s in steps] + [{"role": "assistant", "content": "", "tool_calls": calls}]
    )
    want = reference(dialogs)
    assert prompts == want[:-1]
    ctx.begin_assistant()
    before = len(ctx.prompt_ids())
    header = len(tok.encode("<|header_start|>assistant<|header_end|>\n\n"))
    sampled = want[-1][before:-header]
    assert tok.decode(sampled) == '[get_weather(city="東京", days=1)][noop()]<|eom|>'
    reply = ctx.current_reply
    assert reply is not None
    parser = reply.new_parser()
    events = parser.feed_ids(sampled) + parser.finish()
    for ev in events:
        if isinstance(ev, tokstream.ReplySegment):
            reply.add_segment(ev)
    reply.finish(sampled)
    done = events[-1]
    assert isinstance(done, tokstream.Reply)
    assert [(c.name, c.arguments, c.ok) for c in done.tool_calls] == [
        ("get_weather", {"city": "東京", "days": 1}, True),
        ("noop", {}, True),
    ]
    ctx.begin_assistant()
    assert ctx.prompt_ids().tolist() == want[-1]


def test_llama4_refuses_what_no_reference_renders(tok: Tokenizer) -> None:
    ctx = Context(tok, "llama4")
    with pytest.raises(InvalidRequest, match="llama4 chat format renders no tool definitions"):
        ctx.add_system("s", tools=[{"name": "f", "parameters": {}}])
    with pytest.raises(InvalidRequest, match="renders no reasoning"):
        ctx.add_assistant("a", reasoning="r")
    with pytest.raises(InvalidRequest, match="llama4_pythonic"):
        ctx.chat_format.reply_format("llama3_json")
