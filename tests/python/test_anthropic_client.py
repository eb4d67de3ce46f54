"""The official `anthropic` client's `messages.create` against /v1/messages.

Ollama serves Anthropic's Messages API over its chat so that Anthropic-API tools can
run on local models. Each answer is also asked of the upstream directly
(TEST_DIRECT_HOST; the server itself when it is the simulator) and must be the same
but for the message id: foreman queues the request and relays the answer unchanged.
"""

import anthropic
import pytest

MESSAGES = [{"role": "user", "content": "Say something about queues."}]
TOOLS = [{
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]


def client_for(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url.rstrip("/"), api_key="unused", max_retries=0)


@pytest.fixture()
def claude(host: str) -> anthropic.Anthropic:
    return client_for(host)


@pytest.fixture()
def direct(direct_host: str) -> anthropic.Anthropic:
    return client_for(direct_host)


def comparable(message) -> dict:
    value = message.model_dump(exclude_none=True)
    value.pop("id", None)
    return value


def event_data(event) -> dict:
    """An event without the message id (the only part that differs between runs)."""
    value = event.model_dump(exclude_none=True)
    if "message" in value:
        value["message"].pop("id", None)
    return value


def text_of(message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def test_message(claude, direct, chat_model):
    reply = claude.messages.create(model=chat_model, max_tokens=8, messages=MESSAGES)
    assert reply.type == "message"
    assert reply.role == "assistant"
    assert reply.id.startswith("msg_")
    assert [block.type for block in reply.content] == ["text"]
    assert text_of(reply)
    assert reply.stop_reason == "max_tokens"
    assert reply.usage.output_tokens == 8
    assert reply.usage.input_tokens > 0
    assert comparable(reply) == comparable(direct.messages.create(model=chat_model, max_tokens=8, messages=MESSAGES))


def test_message_stream_has_ollamas_events_and_the_same_answer(claude, direct, chat_model):
    whole = claude.messages.create(model=chat_model, max_tokens=1000, system="Be brief.", messages=MESSAGES)
    assert whole.stop_reason == "end_turn"
    events = list(claude.messages.create(
        model=chat_model, max_tokens=1000, system="Be brief.", messages=MESSAGES, stream=True
    ))
    types = [event.type for event in events]
    deltas = types.count("content_block_delta")
    assert deltas > 0
    assert types == (
        ["message_start", "content_block_start"]
        + ["content_block_delta"] * deltas
        + ["content_block_stop", "message_delta", "message_stop"]
    )
    assert events[1].content_block.type == "text"
    text = "".join(event.delta.text for event in events if event.type == "content_block_delta")
    assert text == text_of(whole)
    delta = events[-2]
    assert delta.delta.stop_reason == whole.stop_reason
    assert delta.usage.output_tokens == whole.usage.output_tokens
    assert delta.usage.input_tokens == whole.usage.input_tokens

    again = list(direct.messages.create(
        model=chat_model, max_tokens=1000, system="Be brief.", messages=MESSAGES, stream=True
    ))
    assert [event_data(event) for event in again] == [event_data(event) for event in events]


def test_message_stream_helper_accumulates_the_same_message(claude, chat_model):
    whole = claude.messages.create(model=chat_model, max_tokens=1000, messages=MESSAGES)
    with claude.messages.stream(model=chat_model, max_tokens=1000, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    assert text_of(final) == text_of(whole)
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_message_with_tools(claude, direct, chat_model):
    reply = claude.messages.create(model=chat_model, max_tokens=1000, messages=MESSAGES, tools=TOOLS)
    assert reply.stop_reason == "tool_use"
    uses = [block for block in reply.content if block.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather"
    assert "city" in uses[0].input
    assert comparable(reply) == comparable(
        direct.messages.create(model=chat_model, max_tokens=1000, messages=MESSAGES, tools=TOOLS)
    )

    answered = MESSAGES + [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in reply.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"}]},
    ]
    final = claude.messages.create(model=chat_model, max_tokens=1000, messages=answered, tools=TOOLS)
    assert final.stop_reason == "end_turn"
    assert text_of(final)

    with claude.messages.stream(model=chat_model, max_tokens=1000, messages=MESSAGES, tools=TOOLS) as stream:
        streamed = stream.get_final_message()
    assert [block.type for block in streamed.content] == ["tool_use"]
    assert streamed.content[0].input == uses[0].input
    assert streamed.stop_reason == "tool_use"


def test_message_unknown_model_is_a_404(claude):
    with pytest.raises(anthropic.NotFoundError) as raised:
        claude.messages.create(model="no-such-model", max_tokens=8, messages=MESSAGES)
    assert raised.value.status_code == 404
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"] == {"type": "not_found_error", "message": "model 'no-such-model' not found"}


def test_message_bad_request_is_a_400(claude, chat_model):
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude.messages.create(model=chat_model, max_tokens=8, messages=[])
    assert raised.value.body["error"] == {"type": "invalid_request_error", "message": "messages is required"}
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude.messages.create(model=chat_model, max_tokens=0, messages=MESSAGES)
    assert raised.value.body["error"]["message"] == "max_tokens is required and must be positive"
