"""The official `openai` Python SDK against the local server (`make run`'s binary, with its Razorpay and
model stand-ins): models, chat with and without streaming, and the SDK's own exceptions for a bad key, an
unknown model, an empty wallet and providers at their rate limit (RateLimitError, after the wait they asked). Run by `make test`; takes the server's base URL as its only argument."""

import pathlib
import subprocess
import sys

import openai

from local_account import customer

BASE = sys.argv[1].rstrip("/")
checks = 0


def check(condition, what):
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1


paid_key = customer("sdk@example.in", "SDKPE1231K", 100)
paid = openai.OpenAI(base_url=BASE + "/v1", api_key=paid_key)
broke = openai.OpenAI(base_url=BASE + "/v1", api_key=customer("broke@example.in", "SDKPE4320K", 0))
bad = openai.OpenAI(base_url=BASE + "/v1", api_key="sk-inferex-not-a-real-key", max_retries=0)

models = [m.id for m in paid.models.list()]
check("llama-3.1-8b" in models, "models.list() includes llama-3.1-8b: %s" % models)

reply = paid.chat.completions.create(model="llama-3.1-8b", messages=[{"role": "user", "content": "Namaste"}])
check(reply.choices[0].message.content == "Namaste! This is the stand-in model.", "chat content: %r" % reply)
check(reply.usage is not None and reply.usage.total_tokens > 0, "usage reported")

chunks = list(paid.chat.completions.create(model="llama-3.1-8b", messages=[{"role": "user", "content": "Hi"}], stream=True))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check(text == "Namaste! This is the stand-in model.", "streamed content: %r" % text)

chunks = list(paid.chat.completions.create(model="llama-3.1-8b", messages=[{"role": "user", "content": "Hi"}],
                                           stream=True, stream_options={"include_usage": True}))
check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0, "usage chunk on request")

try:
    bad.models.list()
    check(False, "a bad key raises")
except openai.AuthenticationError as e:
    check(e.status_code == 401, "bad key -> AuthenticationError 401")

try:
    paid.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    check(False, "an unknown model raises")
except openai.NotFoundError as e:
    check(e.status_code == 404 and "model" in str(e), "unknown model -> NotFoundError 404")

try:
    broke.with_options(max_retries=0).chat.completions.create(model="llama-3.1-8b", messages=[{"role": "user", "content": "x"}])
    check(False, "an empty wallet raises")
except openai.APIStatusError as e:
    check(e.status_code == 402 and "insufficient" in str(e), "empty wallet -> APIStatusError 402: %s" % e)

# Every provider at its rate limit, asking for 2 s: the SDK gets RateLimitError, after waiting as told.
import json
import time
import urllib.request


def providers_fail(status, retry_after=None):
    body = json.dumps({"status": status, "retry_after": retry_after}).encode()
    urllib.request.urlopen(urllib.request.Request(BASE + "/_upstream/dev/failure", data=body, method="POST",
                                                  headers={"content-type": "application/json"}))


providers_fail(429, "2")
try:
    started = time.monotonic()
    paid.with_options(max_retries=1).chat.completions.create(model="llama-3.1-8b", messages=[{"role": "user", "content": "x"}])
    check(False, "a rate-limited provider raises")
except openai.RateLimitError as e:
    waited = time.monotonic() - started
    check(e.response.headers.get("retry-after") == "2", "the provider's Retry-After reaches the SDK: %s" % e.response.headers)
    check(waited >= 2.0, "the SDK waited as told before its retry (%.2f s)" % waited)
finally:
    providers_fail(None)

print("sdk: %d passed, 0 failed" % checks)

# `make smoke`, the post-deploy check, against this server: it must pass here before it is trusted there.
smoke = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "smoke.py"
sys.exit(subprocess.run([sys.executable, str(smoke), BASE, paid_key]).returncode)
