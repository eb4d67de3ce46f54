"""The official `openai` client's Batch API flow for `/v1/embeddings` against foreman.

Run by `crates/foreman/tests/it/batches.rs` (not collected by pytest). Arguments:
foreman's URL, the simulator's URL behind it, the embedding model and the number of
lines. It uploads a JSONL file of embedding requests (one input or several per line),
creates a batch with `endpoint="/v1/embeddings"`, polls it until it ends, downloads the
output and checks each line, matched by custom_id, against what the simulator answers to
the same request asked directly: the same vectors and each line's own `usage`. Prints
`ok` and exits 0 when everything holds.
"""

import json
import math
import sys
import tempfile
import time

import openai

foreman_url, direct_url, model, count_arg = sys.argv[1:5]
count = int(count_arg)

client = openai.OpenAI(base_url=foreman_url.rstrip("/") + "/v1", api_key="unused", max_retries=0)
direct = openai.OpenAI(base_url=direct_url.rstrip("/") + "/v1", api_key="unused", max_retries=0)

requests = {}
with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
    for i in range(count):
        if i % 3 == 0:
            text = f"Document {i}: " + "queues hold work " * (1 + i % 7)
        else:
            text = [f"Document {i} part {part}: " + "drained by model " * (1 + part) for part in range(1 + i % 4)]
        body = {"model": model, "input": text}
        custom_id = f"embed-{i}"
        requests[custom_id] = body
        line = {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": body}
        handle.write(json.dumps(line) + "\n")
    path = handle.name

with open(path, "rb") as upload:
    uploaded = client.files.create(file=upload, purpose="batch")

batch = client.batches.create(
    input_file_id=uploaded.id,
    endpoint="/v1/embeddings",
    completion_window="24h",
)
assert batch.endpoint == "/v1/embeddings", batch
assert batch.status == "validating", batch

deadline = time.monotonic() + 240
while batch.status not in ("completed", "failed", "expired", "cancelled"):
    assert time.monotonic() < deadline, f"the batch did not end: {batch}"
    time.sleep(0.2)
    batch = client.batches.retrieve(batch.id)

assert batch.status == "completed", batch
assert batch.request_counts.total == count, batch.request_counts
assert batch.request_counts.completed == count, batch.request_counts
assert batch.request_counts.failed == 0, batch.request_counts
assert batch.error_file_id is None, batch

output = client.files.content(batch.output_file_id).text
lines = [json.loads(text) for text in output.splitlines() if text.strip()]
ids = [line["custom_id"] for line in lines]
assert len(ids) == count and set(ids) == set(requests), "each custom_id exactly once"

usages = set()
for line in lines:
    assert line["error"] is None, line
    response = line["response"]
    assert response["status_code"] == 200, line
    body = response["body"]
    asked = requests[line["custom_id"]]
    answer = direct.embeddings.create(**asked, encoding_format="float")
    assert body["object"] == "list", body
    assert body["model"] == answer.model, (body, answer)
    assert len(body["data"]) == len(answer.data), (line["custom_id"], body["data"], answer)
    for got, want in zip(body["data"], answer.data):
        assert got["index"] == want.index, (got, want)
        assert len(got["embedding"]) == len(want.embedding), (got, want)
        assert all(
            math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7) for a, b in zip(got["embedding"], want.embedding)
        ), line["custom_id"]
    # Each line's usage is its own call's.
    assert body["usage"]["prompt_tokens"] == answer.usage.prompt_tokens, (line["custom_id"], body["usage"], answer.usage)
    assert body["usage"]["total_tokens"] == answer.usage.total_tokens, (line["custom_id"], body["usage"], answer.usage)
    usages.add(body["usage"]["prompt_tokens"])

# The inputs differ in length, so the lines' usages differ: no line shows another's.
assert len(usages) > 1, usages

print("ok", batch.id, count)
