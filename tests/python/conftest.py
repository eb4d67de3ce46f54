"""Shared fixtures: the server under test and the model names.

The suite asserts Ollama's contract through the official `ollama` client, so it runs
unchanged against ollama-sim and against foreman in front of it. The Rust tests start
the server and set OLLAMA_HOST and the model variables.
"""

import os

import ollama
import pytest


@pytest.fixture(scope="session")
def host() -> str:
    value = os.environ.get("OLLAMA_HOST")
    if not value:
        pytest.fail("OLLAMA_HOST must name the server under test")
    return value


@pytest.fixture(scope="session")
def chat_model() -> str:
    return os.environ.get("TEST_CHAT_MODEL", "llama3.2:3b")


@pytest.fixture(scope="session")
def chat_model_2() -> str:
    return os.environ.get("TEST_CHAT_MODEL_2", "qwen2.5:0.5b")


@pytest.fixture(scope="session")
def embed_model() -> str:
    return os.environ.get("TEST_EMBED_MODEL", "nomic-embed-text")


@pytest.fixture()
def client(host: str) -> ollama.Client:
    return ollama.Client(host=host)


@pytest.fixture()
def async_client(host: str) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=host)
