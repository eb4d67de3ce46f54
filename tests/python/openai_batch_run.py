"""The official `openai` client runs one batch file through foreman's Batch API.

Run by `crates/foreman/tests/it/batch_groups.rs` (not collected by pytest), which checks
what comes back. Arguments: foreman's URL, the path of a JSONL input file and the
batch's endpoint. It uploads the file (`files.create`), creates the batch
(`batches.create`), polls it (`batches.retrieve`) until it ends and downloads its output
and error files (`files.content`). Prints one JSON object on stdout: the batch's id,
status and request counts, and the lines of both files.
"""

import json
import sys
import time

import openai

foreman_url, path, endpoint = sys.argv[1:4]

client = openai.OpenAI(base_url=foreman_url.rstrip("/") + "/v1", api_key="unused", max_retries=0)

with open(path, "rb") as upload:
    uploaded = client.files.create(file=upload, purpose="batch")

batch = client.batches.create(
    input_file_id=uploaded.id,
    endpoint=endpoint,
    completion_window="24h",
)
assert batch.endpoint == endpoint, batch

deadline = time.monotonic() + 240
while batch.status not in ("completed", "failed", "expired", "cancelled"):
    assert time.monotonic() < deadline, f"the batch did not end: {batch}"
    time.sleep(0.1)
    batch = client.batches.retrieve(batch.id)


def lines(file_id):
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


counts = batch.request_counts
print(
    json.dumps(
        {
            "id": batch.id,
            "status": batch.status,
            "errors": batch.errors.model_dump() if batch.errors else None,
            "request_counts": {"total": counts.total, "completed": counts.completed, "failed": counts.failed},
            "output": lines(batch.output_file_id),
            "error_lines": lines(batch.error_file_id),
        }
    )
)
