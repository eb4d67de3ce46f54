"""Shared fixtures: the server under test and the model names.

The suite drives the server only through the official `ollama` client and asserts
Ollama's API contract, so it runs unchanged against ollama-sim and against foreman in
front of it. The Rust integration tests start the server and set:

- OLLAMA_HOST: the server's base URL, e.g. http://127.0.0.1:45678 (required)
- TEST_CHAT_MODEL, TEST_CHAT_MODEL_2: two chat models (defaults llama3.2:3b, qwen2.5:0.5b)
- TEST_EMBED_MODEL: an embedding model (default nomic-embed-text)
- TEST_DIRECT_HOST: the simulator behind foreman, when OLLAMA_HOST is foreman (optional)
"""

import os

import ollama
import pytest


@pytest.fixture(scope="session")
def host() -> str:
    value = os.environ.get("OLLAMA_HOST", "").strip()
    if not value:
        pytest.fail("OLLAMA_HOST must name the server under test, e.g. http://127.0.0.1:11434")
    return value


@pytest.fixture(scope="session")
def chat_model() -> str:
    return os.environ.get("TEST_CHAT_MODEL") or "llama3.2:3b"


@pytest.fixture(scope="session")
def chat_model_2() -> str:
    return os.environ.get("TEST_CHAT_MODEL_2") or "qwen2.5:0.5b"


@pytest.fixture(scope="session")
def embed_model() -> str:
    return os.environ.get("TEST_EMBED_MODEL") or "nomic-embed-text"


@pytest.fixture()
def client(host: str):
    with ollama.Client(host=host) as value:
        yield value


@pytest.fixture(scope="session")
def direct_host(host: str) -> str:
    """The upstream the server under test sits in front of (TEST_DIRECT_HOST), so a
    test can ask both and compare; the server itself when it is the simulator."""
    return (os.environ.get("TEST_DIRECT_HOST") or "").strip() or host
