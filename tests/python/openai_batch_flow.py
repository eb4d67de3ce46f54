"""The official `openai` client's Batch API flow against foreman, end to end.

Run by `crates/foreman/tests/it/batches.rs` (not collected by pytest: the simulator has
no Batch API). Arguments: foreman's URL, the simulator's URL behind it, the models
(comma-separated) and the number of lines. It uploads a JSONL file of chat requests over
the models, creates a batch, polls it until it ends, downloads the output and checks
each line, matched by custom_id, against what the simulator answers to the same request
asked directly. Prints `ok` and exits 0 when everything holds.
"""

import json
import sys
import tempfile
import time

import openai

foreman_url, direct_url, models_arg, count_arg = sys.argv[1:5]
models = models_arg.split(",")
count = int(count_arg)

client = openai.OpenAI(base_url=foreman_url.rstrip("/") + "/v1", api_key="unused", max_retries=0)
direct = openai.OpenAI(base_url=direct_url.rstrip("/") + "/v1", api_key="unused", max_retries=0)

requests = {}
with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
    for i in range(count):
        body = {
            "model": models[i % len(models)],
            "messages": [{"role": "user", "content": f"Question {i}: say something about queues."}],
            "max_tokens": 4 + i % 9,
        }
        custom_id = f"request-{i}"
        requests[custom_id] = body
        line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
        handle.write(json.dumps(line) + "\n")
    path = handle.name

with open(path, "rb") as upload:
    uploaded = client.files.create(file=upload, purpose="batch")
assert uploaded.object == "file", uploaded
assert uploaded.purpose == "batch", uploaded
assert uploaded.id.startswith("file-"), uploaded
assert uploaded.bytes == len(open(path, "rb").read()), uploaded
assert client.files.retrieve(uploaded.id).id == uploaded.id
assert uploaded.id in [f.id for f in client.files.list(purpose="batch")]

batch = client.batches.create(
    input_file_id=uploaded.id,
    endpoint="/v1/chat/completions",
    completion_window="24h",
    metadata={"suite": "openai_batch_flow"},
)
assert batch.object == "batch", batch
assert batch.status == "validating", batch
assert batch.metadata == {"suite": "openai_batch_flow"}, batch

deadline = time.monotonic() + 240
seen = []
while batch.status not in ("completed", "failed", "expired", "cancelled"):
    assert time.monotonic() < deadline, f"the batch did not end: {batch}"
    time.sleep(0.2)
    batch = client.batches.retrieve(batch.id)
    if not seen or seen[-1] != batch.status:
        seen.append(batch.status)

assert batch.status == "completed", batch
assert batch.request_counts.total == count, batch.request_counts
assert batch.request_counts.completed == count, batch.request_counts
assert batch.request_counts.failed == 0, batch.request_counts
assert batch.error_file_id is None, batch
assert batch.errors is None, batch
for stamp in ("created_at", "in_progress_at", "finalizing_at", "completed_at"):
    assert getattr(batch, stamp), (stamp, batch)
assert batch.created_at <= batch.in_progress_at <= batch.finalizing_at <= batch.completed_at

listed = client.batches.list(limit=1)
assert listed.data[0].id == batch.id, listed

output = client.files.content(batch.output_file_id).text
lines = [json.loads(text) for text in output.splitlines() if text.strip()]
ids = [line["custom_id"] for line in lines]
assert len(ids) == count and set(ids) == set(requests), "each custom_id exactly once"

for line in lines:
    assert line["id"].startswith("batch_req_"), line
    assert line["error"] is None, line
    response = line["response"]
    assert response["status_code"] == 200, line
    assert response["request_id"], line
    body = response["body"]
    asked = requests[line["custom_id"]]
    answer = direct.chat.completions.create(**asked)
    assert body["object"] == "chat.completion", body
    assert body["model"] == answer.model, (body, answer)
    choice = body["choices"][0]
    assert choice["message"]["content"] == answer.choices[0].message.content, (line, answer)
    assert choice["finish_reason"] == answer.choices[0].finish_reason, (line, answer)
    assert body["usage"]["completion_tokens"] == answer.usage.completion_tokens, (line, answer)

print("ok", batch.id, " -> ".join(seen))
