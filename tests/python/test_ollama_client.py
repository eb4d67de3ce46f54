"""The official `ollama` Python client against the server under test.

Every call here is one a real program makes; the assertions are Ollama's contract
(shapes, stream sequence, error statuses), never a server's internals.
"""

import asyncio
import math
import time

import ollama
import pytest

MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]


def same_model(listed: str, wanted: str) -> bool:
    def full(name: str) -> str:
        return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"

    return full(listed.lower()) == full(wanted.lower())


def test_chat_non_streaming(client, chat_model):
    reply = client.chat(model=chat_model, messages=MESSAGES)
    assert reply.message.role == "assistant"
    assert reply.message.content
    assert reply.done is True
    assert reply.done_reason == "stop"
    assert reply.eval_count and reply.eval_count > 0
    assert reply.total_duration and reply.total_duration > 0
    assert reply.model == chat_model


def test_chat_streaming_matches_non_streaming(client, chat_model):
    whole = client.chat(model=chat_model, messages=MESSAGES)
    chunks = list(client.chat(model=chat_model, messages=MESSAGES, stream=True))
    assert len(chunks) > 2
    assert all(not c.done for c in chunks[:-1])
    last = chunks[-1]
    assert last.done is True
    assert last.done_reason == "stop"
    assert last.eval_count == whole.eval_count
    streamed = "".join(c.message.content for c in chunks)
    assert streamed == whole.message.content, "replies are deterministic per request"


def test_chat_num_predict_stops_with_length(client, chat_model):
    reply = client.chat(model=chat_model, messages=MESSAGES, options={"num_predict": 5})
    assert reply.eval_count == 5
    assert reply.done_reason == "length"


def test_generate_streaming_and_not(client, chat_model):
    whole = client.generate(model=chat_model, prompt="Tell me a story")
    assert whole.response
    assert whole.done is True
    assert whole.context, "a non-raw generate returns its context"
    chunks = list(client.generate(model=chat_model, prompt="Tell me a story", stream=True))
    assert chunks[-1].done is True
    assert "".join(c.response for c in chunks) == whole.response


def test_embed_single_and_batch(client, embed_model):
    one = client.embed(model=embed_model, input="hello")
    assert len(one.embeddings) == 1
    batch = client.embed(model=embed_model, input=["hello", "world", "hello"])
    assert len(batch.embeddings) == 3
    assert batch.embeddings[0] == batch.embeddings[2] == one.embeddings[0]
    assert batch.embeddings[0] != batch.embeddings[1]
    assert len({len(v) for v in batch.embeddings}) == 1
    norm = math.sqrt(sum(x * x for x in batch.embeddings[1]))
    assert abs(norm - 1.0) < 1e-3


def test_legacy_embeddings(client, embed_model):
    reply = client.embeddings(model=embed_model, prompt="hello")
    assert len(reply.embedding) > 0


def test_list_shows_every_model(client, chat_model, chat_model_2, embed_model):
    models = client.list().models
    for wanted in (chat_model, chat_model_2, embed_model):
        found = [m for m in models if same_model(m.model, wanted)]
        assert found, f"{wanted} listed"
        model = found[0]
        assert model.size and model.size > 0
        assert model.modified_at is not None
        assert model.details is not None and model.details.family


def test_ps_shows_a_model_after_chat(client, chat_model):
    client.chat(model=chat_model, messages=MESSAGES)
    # A proxy may serve /api/ps from a short-lived cache: give it a moment.
    deadline = time.monotonic() + 10
    while True:
        loaded = [m for m in client.ps().models if same_model(m.model, chat_model)]
        if loaded or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert loaded, "the chat model is resident"
    assert loaded[0].expires_at is not None
    assert loaded[0].size_vram and loaded[0].size_vram > 0


def test_show_reports_capabilities(client, chat_model):
    shown = client.show(chat_model)
    assert "completion" in (shown.capabilities or [])
    assert shown.details is not None


@pytest.mark.parametrize("call", ["chat", "generate"])
def test_unknown_model_is_a_404(client, call):
    with pytest.raises(ollama.ResponseError) as raised:
        if call == "chat":
            client.chat(model="no-such-model", messages=MESSAGES)
        else:
            client.generate(model="no-such-model", prompt="hi")
    assert raised.value.status_code == 404
    assert "not found" in raised.value.error


def test_async_client_streams(async_client, chat_model):
    async def run():
        parts = []
        async for chunk in await async_client.chat(model=chat_model, messages=MESSAGES, stream=True):
            parts.append(chunk)
        return parts

    parts = asyncio.run(run())
    assert parts[-1].done is True
    assert "".join(p.message.content for p in parts)
