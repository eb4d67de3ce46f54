"""The official `ollama` Python client against the server under test.

Every call here is one a real program makes. The assertions are Ollama's API
contract (response shapes, the stream sequence, final statistics, error statuses),
never a particular server's internals. Replies are deterministic for a given
request, so a streamed reply must concatenate to the non-streamed one.
"""

import asyncio
import datetime
import json
import math
import re
import time

import ollama
import pytest

MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]
PROMPT = "Write a short story about a lighthouse keeper."
UNKNOWN_MODEL = "no-such-model-for-tests:1b"


def full_name(name: str) -> str:
    """A model name with its implicit `:latest` tag made explicit, lower-cased."""
    name = name.lower()
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


def same_model(listed: str, wanted: str) -> bool:
    return full_name(listed) == full_name(wanted)


def l2_norm(vector) -> float:
    return math.sqrt(sum(x * x for x in vector))


def same_vector(a, b) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-7) for x, y in zip(a, b))


def assert_final_stats(final) -> None:
    """The statistics every finished generate/chat response carries."""
    assert final.done is True
    assert final.done_reason in ("stop", "length")
    assert isinstance(final.eval_count, int) and final.eval_count > 0
    assert isinstance(final.total_duration, int) and final.total_duration > 0
    assert isinstance(final.created_at, str) and final.created_at


# --- chat ---------------------------------------------------------------------------


def test_chat_non_streaming(client, chat_model):
    reply = client.chat(model=chat_model, messages=MESSAGES)
    assert isinstance(reply, ollama.ChatResponse)
    assert reply.model == chat_model, "the response echoes the request's model name"
    assert reply.message.role == "assistant"
    assert isinstance(reply.message.content, str) and reply.message.content.strip()
    assert_final_stats(reply)
    assert reply.done_reason == "stop"


def test_chat_streaming_matches_non_streaming(client, chat_model):
    whole = client.chat(model=chat_model, messages=MESSAGES)
    chunks = list(client.chat(model=chat_model, messages=MESSAGES, stream=True))
    assert len(chunks) >= 3, f"a reply streams in several chunks, got {len(chunks)}"
    for chunk in chunks[:-1]:
        assert chunk.done is False
        assert chunk.message.role == "assistant"
        assert chunk.model == chat_model
    last = chunks[-1]
    assert_final_stats(last)
    assert last.done_reason == whole.done_reason == "stop"
    assert last.eval_count == whole.eval_count
    streamed = "".join(chunk.message.content for chunk in chunks)
    assert streamed == whole.message.content, "the streamed reply equals the non-streamed one"


def test_chat_without_messages_loads_the_model(client, chat_model_2):
    reply = client.chat(model=chat_model_2)
    assert reply.done is True
    assert reply.done_reason == "load"
    assert reply.message.role == "assistant"
    assert reply.message.content == ""


# --- generate -----------------------------------------------------------------------


def test_generate_non_streaming(client, chat_model):
    reply = client.generate(model=chat_model, prompt=PROMPT)
    assert isinstance(reply, ollama.GenerateResponse)
    assert reply.model == chat_model
    assert isinstance(reply.response, str) and reply.response.strip()
    assert_final_stats(reply)
    assert reply.done_reason == "stop"
    assert reply.context, "a non-raw generate returns its context"
    assert all(isinstance(token, int) for token in reply.context)


def test_generate_streaming_matches_non_streaming(client, chat_model):
    whole = client.generate(model=chat_model, prompt=PROMPT)
    chunks = list(client.generate(model=chat_model, prompt=PROMPT, stream=True))
    assert len(chunks) >= 3, f"a reply streams in several chunks, got {len(chunks)}"
    assert all(chunk.done is False for chunk in chunks[:-1])
    assert all(not chunk.context for chunk in chunks[:-1]), "context comes with the final chunk only"
    last = chunks[-1]
    assert_final_stats(last)
    assert last.done_reason == "stop"
    assert last.context, "the final chunk carries the context"
    assert last.eval_count == whole.eval_count
    assert "".join(chunk.response for chunk in chunks) == whole.response


def test_generate_with_empty_prompt_loads_the_model(client, chat_model_2):
    reply = client.generate(model=chat_model_2, prompt="")
    assert reply.done is True
    assert reply.done_reason == "load"
    assert reply.response == ""


@pytest.mark.parametrize(
    "call, stream",
    [("chat", False), ("chat", True), ("generate", False), ("generate", True)],
)
def test_num_predict_caps_the_reply(client, chat_model, call, stream):
    options = {"num_predict": 5}
    if call == "chat":
        result = client.chat(model=chat_model, messages=MESSAGES, options=options, stream=stream)
    else:
        result = client.generate(model=chat_model, prompt=PROMPT, options=options, stream=stream)
    final = list(result)[-1] if stream else result
    assert final.done is True
    assert final.eval_count == 5
    assert final.done_reason == "length"


# --- embeddings ---------------------------------------------------------------------


def test_embed_one_string(client, embed_model):
    reply = client.embed(model=embed_model, input="The sky is blue because of Rayleigh scattering.")
    assert isinstance(reply, ollama.EmbedResponse)
    assert len(reply.embeddings) == 1
    vector = reply.embeddings[0]
    assert len(vector) > 0
    assert all(isinstance(x, float) for x in vector)
    assert abs(l2_norm(vector) - 1.0) < 1e-3, "embed vectors are L2-normalized"


def test_embed_a_list(client, embed_model):
    inputs = ["hello", "a different sentence", "hello"]
    batch = client.embed(model=embed_model, input=inputs)
    assert len(batch.embeddings) == len(inputs), "one vector per input, in order"
    assert len({len(vector) for vector in batch.embeddings}) == 1, "all vectors have the model's dimension"
    for vector in batch.embeddings:
        assert abs(l2_norm(vector) - 1.0) < 1e-3
    assert same_vector(batch.embeddings[0], batch.embeddings[2]), "the same input gives the same vector"
    assert not same_vector(batch.embeddings[0], batch.embeddings[1])
    single = client.embed(model=embed_model, input="hello")
    assert same_vector(single.embeddings[0], batch.embeddings[0]), "a vector does not depend on its batch"


def test_legacy_embeddings(client, embed_model):
    reply = client.embeddings(model=embed_model, prompt="hello")
    assert isinstance(reply, ollama.EmbeddingsResponse)
    assert len(reply.embedding) > 0
    assert all(isinstance(x, float) for x in reply.embedding)
    current = client.embed(model=embed_model, input="hello")
    assert len(reply.embedding) == len(current.embeddings[0]), "both endpoints use the model's dimension"


# --- listing and management ---------------------------------------------------------


def test_list_shows_every_model(client, chat_model, chat_model_2, embed_model):
    models = client.list().models
    for wanted in (chat_model, chat_model_2, embed_model):
        found = [m for m in models if m.model and same_model(m.model, wanted)]
        assert len(found) == 1, f"{wanted} is listed once among {[m.model for m in models]}"
        model = found[0]
        assert isinstance(model.size, int) and model.size > 0
        assert isinstance(model.modified_at, datetime.datetime)
        assert model.modified_at.tzinfo is not None, "modified_at carries an offset"
        assert model.digest and re.fullmatch(r"[0-9a-f]{64}", model.digest)
        assert model.details is not None
        assert model.details.format and model.details.family
        assert model.details.parameter_size and model.details.quantization_level


def test_ps_shows_the_model_after_a_chat(client, chat_model):
    client.chat(model=chat_model, messages=MESSAGES)
    # A proxy may answer /api/ps from a short-lived cache: look again for a while
    # before concluding the model is missing (no duration is asserted).
    deadline = time.monotonic() + 10
    while True:
        loaded = [m for m in client.ps().models if m.model and same_model(m.model, chat_model)]
        if loaded or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(loaded) == 1, "the chat model is resident after a chat"
    model = loaded[0]
    assert isinstance(model.expires_at, datetime.datetime)
    assert model.expires_at.tzinfo is not None
    assert isinstance(model.size, int) and model.size > 0
    assert isinstance(model.size_vram, int) and 0 <= model.size_vram <= model.size
    assert model.details is not None and model.details.family


def test_show_a_chat_model(client, chat_model):
    shown = client.show(chat_model)
    assert isinstance(shown, ollama.ShowResponse)
    assert shown.capabilities and "completion" in shown.capabilities
    assert "embedding" not in shown.capabilities
    assert shown.details is not None and shown.details.family
    assert shown.modelinfo is None or isinstance(shown.modelinfo, dict)
    assert isinstance(shown.modified_at, datetime.datetime)


def test_show_an_embedding_model(client, embed_model):
    shown = client.show(embed_model)
    assert shown.capabilities and "embedding" in shown.capabilities
    assert "completion" not in shown.capabilities


# --- errors -------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["chat", "chat-stream", "generate", "generate-stream", "embed", "show"])
def test_an_unknown_model_is_a_404(client, call):
    with pytest.raises(ollama.ResponseError) as raised:
        if call == "chat":
            client.chat(model=UNKNOWN_MODEL, messages=MESSAGES)
        elif call == "chat-stream":
            list(client.chat(model=UNKNOWN_MODEL, messages=MESSAGES, stream=True))
        elif call == "generate":
            client.generate(model=UNKNOWN_MODEL, prompt=PROMPT)
        elif call == "generate-stream":
            list(client.generate(model=UNKNOWN_MODEL, prompt=PROMPT, stream=True))
        elif call == "embed":
            client.embed(model=UNKNOWN_MODEL, input="hello")
        else:
            client.show(UNKNOWN_MODEL)
    error = raised.value
    assert error.status_code == 404, f"{error.status_code}: {error.error}"
    assert "not found" in error.error
    assert UNKNOWN_MODEL in error.error, "the error names the model"


# --- AsyncClient --------------------------------------------------------------------


def test_async_client_chat_streaming(client, host, chat_model):
    async def stream_chat():
        async with ollama.AsyncClient(host=host) as async_client:
            return [chunk async for chunk in await async_client.chat(model=chat_model, messages=MESSAGES, stream=True)]

    chunks = asyncio.run(stream_chat())
    assert len(chunks) >= 3
    assert all(chunk.done is False for chunk in chunks[:-1])
    assert_final_stats(chunks[-1])
    whole = client.chat(model=chat_model, messages=MESSAGES)
    assert "".join(chunk.message.content for chunk in chunks) == whole.message.content


def test_async_client_serves_two_models_at_once(host, chat_model, chat_model_2):
    async def both():
        async with ollama.AsyncClient(host=host) as async_client:
            return await asyncio.gather(
                async_client.chat(model=chat_model, messages=MESSAGES),
                async_client.chat(model=chat_model_2, messages=MESSAGES),
            )

    first, second = asyncio.run(both())
    assert first.model == chat_model
    assert second.model == chat_model_2
    for reply in (first, second):
        assert reply.message.role == "assistant" and reply.message.content.strip()
        assert_final_stats(reply)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


def test_tool_calls(client, chat_model):
    reply = client.chat(
        model=chat_model,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
    )
    calls = reply.message.tool_calls
    assert calls, "the model calls the tool"
    assert calls[0].function.name == "get_weather"
    assert isinstance(calls[0].function.arguments["city"], str)
    streamed = [
        c
        for c in client.chat(
            model=chat_model,
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER_TOOL],
            stream=True,
        )
        if c.message.tool_calls
    ]
    assert streamed and streamed[0].message.tool_calls[0].function.name == "get_weather"


def test_structured_output(client, chat_model):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    reply = client.chat(
        model=chat_model, messages=[{"role": "user", "content": "Who are you?"}], format=schema
    )
    answer = json.loads(reply.message.content)
    assert isinstance(answer["name"], str) and isinstance(answer["age"], int)


def test_a_bad_request_is_a_400(client, chat_model):
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model=chat_model, messages=MESSAGES, keep_alive="300")
    assert raised.value.status_code == 400
    assert "missing unit" in raised.value.error


def test_model_management(client, chat_model):
    progress = list(client.pull("phi3:mini", stream=True))
    assert progress[0].status == "pulling manifest"
    assert progress[-1].status == "success"
    assert client.pull("phi3:mini").status == "success"
    assert client.copy("phi3:mini", "phi3-backup").status == "success"
    assert client.create(model="phi3-custom", from_="phi3:mini").status == "success"
    deadline = time.monotonic() + 10
    while True:
        names = [m.model for m in client.list().models]
        if "phi3-custom:latest" in names or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert {"phi3:mini", "phi3-backup:latest", "phi3-custom:latest"} <= set(names)
    for name in ("phi3:mini", "phi3-backup", "phi3-custom"):
        assert client.delete(name).status == "success"
    with pytest.raises(ollama.ResponseError) as raised:
        client.delete("phi3:mini")
    assert raised.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as raised:
        client.pull("missing-model")
    assert "file does not exist" in raised.value.error
