"""How each family writes its calls, for the sample generator (not tests).

Each renderer writes calls the way the family's own chat template renders an
assistant's ``tool_calls`` (so they are what the model was trained to emit).
"""

from __future__ import annotations

from typing import Any

from tokstream.chat import (
    DEEPSEEK_V3,
    DEEPSEEK_V4,
    DEEPSEEK_V31,
    DEEPSEEK_V32,
    GLM45,
    GPT_OSS,
    HERMES,
    KIMI_K2,
    LLAMA3_JSON,
    LLAMA4_PYTHONIC,
    MINIMAX_M2,
    MISTRAL,
    MISTRAL_V11,
    QWEN3_CODER,
)

from .format_samples import Call, Spec, dumps

DS_EOS = "<｜end▁of▁sentence｜>"
DSML = "｜DSML｜"


def deepseek_v31_calls(calls: list[Call]) -> str:
    body = "".join(
        f"<｜tool▁call▁begin｜>{name}<｜tool▁sep｜>{dumps(args)}<｜tool▁call▁end｜>"
        for name, args in calls
    )
    return f"<｜tool▁calls▁begin｜>{body}<｜tool▁calls▁end｜>"


def hermes_calls(calls: list[Call]) -> str:
    """Qwen2.5 / Qwen3's template: one ``<tool_call>`` JSON object per call."""
    return "\n".join(
        "<tool_call>\n" + dumps({"name": name, "arguments": args}) + "\n</tool_call>"
        for name, args in calls
    )


def qwen3_coder_calls(calls: list[Call]) -> str:
    """Qwen3-Coder's template: ``<function=NAME>`` and one ``<parameter=K>`` per
    argument (objects and lists as JSON, other values as text)."""
    return "\n".join(
        f"<tool_call>\n<function={name}>\n"
        + "".join(f"<parameter={k}>\n{_text_value(v)}\n</parameter>\n" for k, v in args.items())
        + "</function>\n</tool_call>"
        for name, args in calls
    )


def deepseek_v3_calls(calls: list[Call]) -> str:
    """R1's template: ``function<｜tool▁sep｜>NAME`` and fenced JSON per call,
    calls joined by a newline."""
    body = "\n".join(
        f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n{dumps(args)}\n```"
        "<｜tool▁call▁end｜>"
        for name, args in calls
    )
    return f"<｜tool▁calls▁begin｜>{body}<｜tool▁calls▁end｜>"


def _dsml_value(v: Any) -> tuple[str, str]:
    return ("true", v) if isinstance(v, str) else ("false", dumps(v))


def dsml_calls(calls: list[Call], wrapper: str = "function_calls") -> str:
    invokes = []
    for name, args in calls:
        params = "\n".join(
            f'<{DSML}parameter name="{k}" string="{s}">{v}</{DSML}parameter>'
            for k, (s, v) in ((k, _dsml_value(v)) for k, v in args.items())
        )
        invokes.append(f'<{DSML}invoke name="{name}">\n{params}\n</{DSML}invoke>')
    return f"<{DSML}{wrapper}>\n" + "\n".join(invokes) + f"\n</{DSML}{wrapper}>"


def harmony_reply(reasoning: str, content: str, calls: list[Call]) -> str:
    """A gpt-oss reply after the prompt's ``<|start|>assistant``: analysis, then
    a preamble and calls, or a final message."""
    messages = []
    if reasoning:
        messages.append(f"<|channel|>analysis<|message|>{reasoning}<|end|>")
    if calls:
        if content:
            messages.append(f"<|channel|>commentary<|message|>{content}<|end|>")
        messages += [
            f"<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>"
            f"{dumps(args)}<|call|>"
            for name, args in calls
        ]
    else:
        messages.append(f"<|channel|>final<|message|>{content}<|return|>")
    return "<|start|>assistant".join(messages)


def _text_value(v: Any) -> str:
    return v if isinstance(v, str) else dumps(v)


def kimi_calls(calls: list[Call]) -> str:
    body = "".join(
        f"<|tool_call_begin|>functions.{name}:{i}<|tool_call_argument_begin|>"
        f"{dumps(args)}<|tool_call_end|>"
        for i, (name, args) in enumerate(calls)
    )
    return f"<|tool_calls_section_begin|>{body}<|tool_calls_section_end|>"


def glm_calls(calls: list[Call]) -> str:
    return "".join(
        f"<tool_call>{name}\n"
        + "".join(
            f"<arg_key>{k}</arg_key>\n<arg_value>{_text_value(v)}</arg_value>\n"
            for k, v in args.items()
        )
        + "</tool_call>"
        for name, args in calls
    )


def minimax_calls(calls: list[Call]) -> str:
    invokes = "".join(
        f'<invoke name="{name}">\n'
        + "".join(f'<parameter name="{k}">{_text_value(v)}</parameter>\n' for k, v in args.items())
        + "</invoke>\n"
        for name, args in calls
    )
    return f"<minimax:tool_call>\n{invokes}</minimax:tool_call>"


def llama_reply(reasoning: str, content: str, calls: list[Call]) -> str:
    """Llama 3.1 JSON: the calls alone (``; ``-separated, sometimes after
    ``<|python_tag|>``), or content; then ``<|eot_id|>``."""
    if calls:
        body = "; ".join(dumps({"name": name, "parameters": args}) for name, args in calls)
        lead = "<|python_tag|>" if len(body) % 2 else ""
        return f"{lead}{body}<|eot_id|>"
    return f"{content}<|eot_id|>"


def _call_id(name: str, i: int) -> str:
    """A Mistral-style call ID (nine alphanumerics), fixed per call."""
    return (name.replace("_", "") + str(i) * 9)[:9]


def mistral_calls(calls: list[Call]) -> str:
    """Pre-v11: ``[TOOL_CALLS]`` and the calls as one JSON list (``mistral_common``
    v3 writes ``"id"`` when the call has one: every other sample here)."""
    items = []
    for i, (name, args) in enumerate(calls):
        item: dict[str, Any] = {"name": name, "arguments": args}
        if len(calls) % 2:
            item["id"] = _call_id(name, i)
        items.append(item)
    return "[TOOL_CALLS]" + dumps(items)


def mistral_v11_calls(calls: list[Call]) -> str:
    """v11+: ``[TOOL_CALLS]NAME[ARGS]{json}`` per call (v11's ``[CALL_ID]ID`` in
    every other sample; v13 writes none)."""
    with_ids = len(calls) % 2 == 0
    return "".join(
        f"[TOOL_CALLS]{name}"
        + (f"[CALL_ID]{_call_id(name, i)}" if with_ids else "")
        + f"[ARGS]{dumps(args)}"
        for i, (name, args) in enumerate(calls)
    )


def py_literal(value: Any) -> str:
    """A JSON value as a Python literal (strings JSON-quoted, which Python reads)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{dumps(k)}: {py_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(py_literal(v) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return repr(value)
    return dumps(value)


def pythonic_calls(calls: list[Call]) -> str:
    body = ", ".join(
        f"{name}(" + ", ".join(f"{k}={py_literal(v)}" for k, v in args.items()) + ")"
        for name, args in calls
    )
    return f"[{body}]"


def llama4_reply(reasoning: str, content: str, calls: list[Call]) -> str:
    """Llama 4 pythonic: one list of calls (sometimes in ``<|python_start|>`` ...
    ``<|python_end|>``), or content; then ``<|eot|>``."""
    if calls:
        body = pythonic_calls(calls)
        if len(body) % 2:
            body = f"<|python_start|>{body}<|python_end|>"
        return f"{body}<|eot|>"
    return f"{content}<|eot|>"


SPECS: dict[str, Spec] = {
    "hermes": Spec(
        "hermes",
        "qwen",
        HERMES,
        "hermes",
        "qwen3",
        hermes_calls,
        "<|im_end|>",
        think=("<think>", "</think>"),
        chat_kwargs={"enable_thinking": True},
        always_think=True,
        call_lead="\n",
        between_calls="\n",
    ),
    "qwen3_coder": Spec(
        "qwen3_coder",
        "qwen",
        QWEN3_CODER,
        "qwen3_coder",
        "qwen3",
        qwen3_coder_calls,
        "<|im_end|>",
        think=("<think>", "</think>"),
        chat_kwargs={"enable_thinking": True},
        always_think=True,
        call_lead="\n",
        between_calls="\n",
    ),
    "deepseek_v3": Spec(
        "deepseek_v3",
        "deepseek-v3.1",
        DEEPSEEK_V3,
        "deepseek_v3",
        "deepseek_r1",
        deepseek_v3_calls,
        DS_EOS,
        think=("", "</think>"),
    ),
    "deepseek_v31": Spec(
        "deepseek_v31",
        "deepseek-v3.1",
        DEEPSEEK_V31,
        "deepseek_v31",
        "deepseek_v3",
        deepseek_v31_calls,
        DS_EOS,
        think=("", "</think>"),
        chat_kwargs={"thinking": True},
    ),
    "deepseek_v32": Spec(
        "deepseek_v32",
        "deepseek-v3.2",
        DEEPSEEK_V32,
        "deepseek_v32",
        "deepseek_v3",
        dsml_calls,
        DS_EOS,
        think=("", "</think>"),
        chat_kwargs={"thinking": True},
        call_lead="\n\n",
    ),
    "deepseek_v4": Spec(
        "deepseek_v4",
        "deepseek-v3.2",
        DEEPSEEK_V4,
        "deepseek_v4",
        "deepseek_v4",
        lambda calls: dsml_calls(calls, "tool_calls"),
        DS_EOS,
        think=("", "</think>"),
        chat_kwargs={"thinking": True},
        call_lead="\n\n",
    ),
    "harmony": Spec(
        "harmony",
        "gpt-oss",
        GPT_OSS,
        "openai",
        "openai_gptoss",
        lambda calls: "",
        "<|return|>",
        compose=harmony_reply,
        strip_stop=False,
    ),
    "kimi_k2": Spec(
        "kimi_k2",
        "kimi-k2",
        KIMI_K2,
        "kimi_k2",
        "kimi_k2",
        kimi_calls,
        "<|im_end|>",
        think=("", "</think>"),
        chat_kwargs={"thinking": True},
    ),
    "glm45": Spec(
        "glm45",
        "glm-4.5",
        GLM45,
        "glm45",
        "glm45",
        glm_calls,
        "<|user|>",
        think=("<think>", "</think>"),
        chat_kwargs={"enable_thinking": True},
        always_think=True,
        call_lead="\n",
    ),
    "minimax_m2": Spec(
        "minimax_m2",
        "minimax-m2",
        MINIMAX_M2,
        "minimax_m2",
        "minimax_m2",
        minimax_calls,
        "[e~[",
        think=("", "</think>"),
        call_lead="\n",
    ),
    "llama3_json": Spec(
        "llama3_json",
        "llama3",
        LLAMA3_JSON,
        "llama3_json",
        None,
        lambda calls: "",
        "<|eot_id|>",
        compose=llama_reply,
        no_content_with_calls=True,
    ),
    "mistral": Spec(
        "mistral",
        "mistral",
        MISTRAL,
        "mistral",
        None,
        mistral_calls,
        "</s>",
    ),
    "mistral_v11": Spec(
        "mistral_v11",
        "mistral-v13",
        MISTRAL_V11,
        "mistral",
        "mistral",
        mistral_v11_calls,
        "</s>",
        think=("[THINK]", "[/THINK]"),
    ),
    "llama4_pythonic": Spec(
        "llama4_pythonic",
        "llama4",
        LLAMA4_PYTHONIC,
        "llama4_pythonic",
        None,
        lambda calls: "",
        "<|eot|>",
        compose=llama4_reply,
        no_content_with_calls=True,
    ),
}
"""Every family's spec, by tokstream format name. ``think=("", close)``: the
prompt opened the thinking block (the families' generation prompts do), so
the reply starts inside it."""
