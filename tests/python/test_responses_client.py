"""The official `openai` client's Responses API (`responses.create`) against /v1/responses.

Ollama serves OpenAI's Responses API over its chat, stateless, for newer OpenAI
clients and coding agents. Each answer is also asked of the upstream directly
(TEST_DIRECT_HOST; the server itself when it is the simulator) and must be the same
but for ids and clocks: foreman queues the request and relays the answer unchanged.
"""

import json

import openai
import pytest

INPUT = "Say something about queues."
TOOLS = [{
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]


def client_for(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key="unused", max_retries=0)


@pytest.fixture()
def oai(host: str) -> openai.OpenAI:
    return client_for(host)


@pytest.fixture()
def direct(direct_host: str) -> openai.OpenAI:
    return client_for(direct_host)


def comparable(response) -> dict:
    """The answer without what differs between two runs: ids and timestamps."""
    value = response.model_dump(exclude_none=True)
    for key in ("id", "created_at", "completed_at"):
        value.pop(key, None)
    for item in value.get("output", []):
        item.pop("id", None)
    return value


def events_of(stream) -> list:
    return [event for event in stream]


def test_response(oai, direct, chat_model):
    reply = oai.responses.create(model=chat_model, input=INPUT, max_output_tokens=8)
    assert reply.object == "response"
    assert reply.status == "completed"
    assert reply.id.startswith("resp_")
    assert [item.type for item in reply.output] == ["message"]
    assert reply.output[0].role == "assistant"
    assert reply.output_text
    assert reply.usage.output_tokens == 8
    assert reply.usage.input_tokens > 0
    assert reply.usage.total_tokens == reply.usage.input_tokens + 8
    assert comparable(reply) == comparable(
        direct.responses.create(model=chat_model, input=INPUT, max_output_tokens=8)
    )


def test_response_stream_has_ollamas_events_and_the_same_answer(oai, direct, chat_model):
    whole = oai.responses.create(model=chat_model, instructions="Be brief.", input=INPUT)
    events = events_of(oai.responses.create(model=chat_model, instructions="Be brief.", input=INPUT, stream=True))
    types = [event.type for event in events]
    deltas = types.count("response.output_text.delta")
    assert deltas > 0
    assert types == (
        ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
        + ["response.output_text.delta"] * deltas
        + ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
    )
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == whole.output_text
    completed = events[-1].response
    assert completed.status == "completed"
    assert completed.output_text == whole.output_text
    assert completed.usage == whole.usage
    assert completed.instructions == "Be brief."

    again = events_of(direct.responses.create(model=chat_model, instructions="Be brief.", input=INPUT, stream=True))
    assert [event.type for event in again] == types
    assert [getattr(event, "delta", None) for event in again] == [getattr(event, "delta", None) for event in events]
    assert again[-1].response.usage == completed.usage


def test_response_with_input_items_and_tools(oai, direct, chat_model):
    conversation = [
        {"role": "user", "content": "What is the weather in Paris?"},
    ]
    reply = oai.responses.create(model=chat_model, input=conversation, tools=TOOLS)
    calls = [item for item in reply.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert "city" in json.loads(calls[0].arguments)
    assert calls[0].status == "completed"
    assert comparable(reply) == comparable(direct.responses.create(model=chat_model, input=conversation, tools=TOOLS))

    answered = conversation + [
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
    ]
    final = oai.responses.create(model=chat_model, input=answered, tools=TOOLS)
    assert [item.type for item in final.output] == ["message"]
    assert final.output_text

    events = events_of(oai.responses.create(model=chat_model, input=conversation, tools=TOOLS, stream=True))
    assert [event.type for event in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed",
    ]
    assert events[-1].response.output[0].arguments == calls[0].arguments


def test_response_unknown_model_is_a_404(oai):
    with pytest.raises(openai.NotFoundError) as raised:
        oai.responses.create(model="no-such-model", input=INPUT)
    assert raised.value.status_code == 404
    assert raised.value.body["message"] == "model 'no-such-model' not found"
    assert raised.value.body["type"] == "not_found_error"


def test_response_bad_request_is_a_400(oai, chat_model):
    with pytest.raises(openai.BadRequestError) as raised:
        oai.responses.create(model=chat_model, input=[{"type": "no_such_item"}])
    assert raised.value.status_code == 400
    assert raised.value.body["type"] == "invalid_request_error"
    assert "unknown input item type" in raised.value.body["message"]
