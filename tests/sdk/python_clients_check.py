"""LangChain's OpenAI integration and LiteLLM (as a client library) against the local server.
Usage: python python_clients_check.py BASE_URL API_KEY (run by scripts/clients-check.sh with the virtualenv it
installs under .tools/clients-py). Prints one JSON line per client and feature and exits 1 if any failed."""

import json
import sys

import litellm
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

BASE, KEY = sys.argv[1].rstrip("/"), sys.argv[2]
MODEL = "llama-3.1-8b"
failed = 0


def check(client, feature, run):
    global failed
    try:
        detail = run()
        print(json.dumps({"client": client, "feature": feature, "ok": True, "detail": str(detail or "")}))
    except Exception as e:  # every failure is reported with the others
        failed += 1
        print(json.dumps({"client": client, "feature": feature, "ok": False, "detail": str(e)[:300]}))


@tool
def weather(city: str, days: int) -> str:
    """The weather forecast for a city."""
    return city


class Trip(BaseModel):
    city: str
    days: int


chat = ChatOpenAI(base_url=BASE + "/v1", api_key=KEY, model=MODEL, max_retries=0)


def langchain_invoke():
    assert chat.invoke("Namaste").content


def langchain_stream():
    assert "".join(chunk.content for chunk in chat.stream("Namaste"))


def langchain_tools():
    calls = chat.bind_tools([weather]).invoke("Weather in Pune?").tool_calls
    assert calls and calls[0]["name"] == "weather" and isinstance(calls[0]["args"]["city"], str), calls


def langchain_structured():
    trip = chat.with_structured_output(Trip).invoke("Plan a trip")
    assert isinstance(trip, Trip), trip


def litellm_completion():
    reply = litellm.completion(model="openai/" + MODEL, api_base=BASE + "/v1", api_key=KEY,
                               messages=[{"role": "user", "content": "Namaste"}])
    assert reply.choices[0].message.content and reply.usage.total_tokens > 0, reply


def litellm_stream():
    chunks = litellm.completion(model="openai/" + MODEL, api_base=BASE + "/v1", api_key=KEY, stream=True,
                                messages=[{"role": "user", "content": "Namaste"}])
    assert "".join(c.choices[0].delta.content or "" for c in chunks)


check("LangChain", "invoke", langchain_invoke)
check("LangChain", "stream", langchain_stream)
check("LangChain", "bind_tools", langchain_tools)
check("LangChain", "with_structured_output", langchain_structured)
check("LiteLLM", "completion", litellm_completion)
check("LiteLLM", "completion (stream)", litellm_stream)
sys.exit(1 if failed else 0)
