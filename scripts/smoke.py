#!/usr/bin/env python3
"""`make smoke API_URL=... API_KEY=...`: after a deploy, checks the live API the way a customer meets it:
health, the model list through the official openai SDK, a non-streamed and a streamed completion, and our
error shape on an unknown route. The key's account needs KYC and a little balance (each completion costs
a few paise). `make test` runs it against the local server too.

    scripts/smoke.py API_URL API_KEY [MODEL]
"""

import json
import sys
import urllib.error
import urllib.request

import openai

results = {"passed": 0, "failed": 0}


def check(ok, what):
    print(f"smoke: {'ok  ' if ok else 'FAIL'} {what}")
    results["passed" if ok else "failed"] += 1
    return ok


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def main():
    if len(sys.argv) < 3 or not sys.argv[1] or not sys.argv[2]:
        sys.exit("usage: make smoke API_URL=https://<api>/<stage> API_KEY=<an API key of a funded, verified account>")
    base, key = sys.argv[1].rstrip("/"), sys.argv[2]
    client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=1, timeout=120)

    status, _ = get(base + "/health")
    check(status == 200, f"GET /health answers 200 ({status})")

    try:
        models = [m.id for m in client.models.list()]
    except openai.APIError as error:
        models = []
        print(f"smoke: models.list() failed: {error}")
    check(bool(models), f"the SDK lists the models ({len(models)})")
    model = sys.argv[3] if len(sys.argv) > 3 else (models[0] if models else "")
    messages = [{"role": "user", "content": "Reply with one short sentence about Mumbai."}]

    try:
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=32)
        check(bool(reply.choices and reply.choices[0].message.content), f"a completion from {model}")
        check(reply.usage is not None and reply.usage.total_tokens > 0, "the completion reports its usage")
    except openai.APIError as error:
        check(False, f"a completion from {model}: {error}")

    try:
        chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=32, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        check(bool(text), f"a streamed completion from {model} ({len(chunks)} chunks)")
    except openai.APIError as error:
        check(False, f"a streamed completion from {model}: {error}")

    status, body = get(base + "/v1/no-such-route")
    try:
        error = json.loads(body).get("error", {})
    except ValueError:
        error = {}
    check(
        status == 404 and {"type", "code", "message", "param"} <= set(error),
        f"an unknown route answers 404 in the error shape ({status} {body[:120]!r})",
    )

    print(f"smoke: {results['passed']} passed, {results['failed']} failed")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
