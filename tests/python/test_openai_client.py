"""The official `openai` Python client against the server's OpenAI-compatible API.

Ollama serves /v1 beside its native API, and programs written for OpenAI use it;
the assertions are that contract, so the suite runs against ollama-sim and foreman.
"""

import json

import openai
import pytest


@pytest.fixture()
def oai(host: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=host.rstrip("/") + "/v1", api_key="unused", max_retries=0)


MESSAGES = [{"role": "user", "content": "Say something about queues."}]


def test_chat_completion(oai, chat_model):
    reply = oai.chat.completions.create(model=chat_model, messages=MESSAGES, max_tokens=8)
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 8


def test_chat_completion_streams_the_same_text(oai, chat_model):
    whole = oai.chat.completions.create(model=chat_model, messages=MESSAGES)
    stream = oai.chat.completions.create(
        model=chat_model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishing and finishing[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_completion(oai, chat_model):
    reply = oai.completions.create(model=chat_model, prompt="Once upon a time", max_tokens=5)
    assert reply.object == "text_completion"
    assert reply.choices[0].text
    streamed = "".join(
        c.choices[0].text for c in oai.completions.create(model=chat_model, prompt="Once upon a time", max_tokens=5, stream=True) if c.choices
    )
    assert streamed == reply.choices[0].text


def test_embeddings(oai, embed_model):
    reply = oai.embeddings.create(model=embed_model, input=["a", "b"])
    assert len(reply.data) == 2
    assert reply.data[1].index == 1
    assert len(reply.data[0].embedding) > 0


def test_models(oai, chat_model):
    ids = [m.id for m in oai.models.list()]
    assert any(i == chat_model or i == chat_model + ":latest" for i in ids)
    assert oai.models.retrieve(chat_model).id == chat_model


def test_unknown_model_is_a_404(oai):
    with pytest.raises(openai.NotFoundError) as raised:
        oai.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert raised.value.status_code == 404
    assert "not found" in str(raised.value)


def test_bad_request_is_a_400(oai, chat_model):
    with pytest.raises(openai.BadRequestError) as raised:
        oai.chat.completions.create(model=chat_model, messages=[])
    assert raised.value.status_code == 400


def test_tools_and_structured_output(oai, chat_model):
    tools = [{
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }]
    reply = oai.chat.completions.create(model=chat_model, messages=MESSAGES, tools=tools)
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    assert reply.choices[0].finish_reason == "tool_calls"
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    shaped = oai.chat.completions.create(
        model=chat_model,
        messages=MESSAGES,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    assert isinstance(json.loads(shaped.choices[0].message.content)["name"], str)
