"""Drives the sidecar with the official Python `openai` client and prints what it saw.

Run by ../python-client.test.ts: `openai_client_probe.py <scenario>`, where the scenario is
one of SCENARIOS. The client reads OPENAI_BASE_URL and OPENAI_API_KEY itself, as SDK users
configure it; PROBE_INPUT holds the scenario's JSON inputs (prompts, a wrong key). Prints ONE
JSON object on stdout: the observations, or {"fatal": ...} (exit 1) on an unexpected error.
"""

import json
import os
import sys
import time
import uuid
from typing import Any, Callable

import openai
from openai import OpenAI

MODEL = "open-persona/build"
Inputs = dict[str, Any]


def client(**kw: Any) -> OpenAI:
    # No retries: a retried chat request would run the agent twice and hide the first failure.
    # The timeout stays below the test's deadline, so a stuck call is reported, not killed.
    return OpenAI(max_retries=0, timeout=60, **kw)


def usage_of(u: Any) -> dict[str, int] | None:
    if u is None:
        return None
    return {"prompt": u.prompt_tokens, "completion": u.completion_tokens, "total": u.total_tokens}


def stream(inp: Inputs) -> dict[str, Any]:
    t0 = time.monotonic()
    deltas: list[dict[str, Any]] = []
    finish: str | None = None
    usage: dict[str, int] | None = None
    usage_after_finish = False
    chunks = client().chat.completions.create(
        model=MODEL,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": inp["prompt"]}],
    )
    for chunk in chunks:
        if chunk.usage is not None:
            usage = usage_of(chunk.usage)
            usage_after_finish = finish is not None
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append({"text": choice.delta.content, "ms": round((time.monotonic() - t0) * 1000)})
            if choice.finish_reason:
                finish = choice.finish_reason
    return {"deltas": deltas, "finish": finish, "usage": usage, "usage_after_finish": usage_after_finish}


def complete(inp: Inputs) -> dict[str, Any]:
    r = client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": inp["prompt"]}])
    c = r.choices[0]
    return {
        "object": r.object,
        "role": c.message.role,
        "content": c.message.content,
        "finish": c.finish_reason,
        "usage": usage_of(r.usage),
    }


def session(inp: Inputs) -> dict[str, Any]:
    c = client()

    def ask(messages: list[dict[str, str]], **kw: Any) -> str:
        return c.chat.completions.create(model=MODEL, messages=messages, **kw).choices[0].message.content or ""

    # Stateless SDK style: the second request resends the whole conversation.
    first = [{"role": "user", "content": inp["history_first"]}]
    answer = ask(first)
    resent = ask([*first, {"role": "assistant", "content": answer}, {"role": "user", "content": inp["count"]}])

    # Session-id style: only the new message, the chat named by X-Session-Id.
    headers = {"X-Session-Id": str(uuid.uuid4())}
    ask([{"role": "user", "content": inp["header_first"]}], extra_headers=headers)
    by_header = ask([{"role": "user", "content": inp["count"]}], extra_headers=headers)
    return {"history_first_answer": answer, "resent": resent, "by_header": by_header}


def errors(inp: Inputs) -> dict[str, Any]:
    def caught(call: Callable[[], object]) -> dict[str, Any]:
        try:
            call()
        except openai.APIStatusError as e:
            return {
                "class": type(e).__name__,
                "status": e.status_code,
                "code": e.code,
                "type": e.type,
                "param": e.param,
                "message": e.message,
            }
        return {"class": None}

    msg = [{"role": "user", "content": "hi"}]
    return {
        "unknown_model": caught(lambda: client().chat.completions.create(model="no-such-model", messages=msg)),
        "wrong_key_models": caught(lambda: client(api_key=inp["wrong_key"]).models.list()),
        "wrong_key_chat": caught(
            lambda: client(api_key=inp["wrong_key"]).chat.completions.create(model=MODEL, messages=msg, stream=True)
        ),
    }


SCENARIOS: dict[str, Callable[[Inputs], dict[str, Any]]] = {
    "stream": stream,
    "complete": complete,
    "session": session,
    "errors": errors,
}


def main() -> int:
    run = SCENARIOS[sys.argv[1]]
    inp: Inputs = json.loads(os.environ.get("PROBE_INPUT", "{}"))
    try:
        out = run(inp)
    except Exception as e:  # reported as JSON so that the test shows what went wrong
        print(json.dumps({"fatal": {"class": type(e).__name__, "message": str(e)}}))
        return 1
    print(json.dumps({"openai_version": openai.__version__, **out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
