-- OpenAI's Batch API: uploaded and produced files (their bytes are on disk under the
-- data directory; this is their record) and batches, each driven through OpenAI's states.
-- A batch's lines are ordinary jobs whose idempotency key is 'batch:<batch id>:<line>'.
CREATE TABLE files (
    id         TEXT    NOT NULL PRIMARY KEY,
    purpose    TEXT    NOT NULL,
    filename   TEXT    NOT NULL,
    bytes      INTEGER NOT NULL,
    lines      INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE batches (
    id                TEXT    NOT NULL PRIMARY KEY,
    endpoint          TEXT    NOT NULL,
    input_file_id     TEXT    NOT NULL,
    completion_window TEXT    NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('validating', 'failed', 'in_progress',
        'finalizing', 'completed', 'expired', 'cancelling', 'cancelled')),
    ending            TEXT    CHECK (ending IN ('completed', 'expired', 'cancelled')),
    metadata          TEXT,
    webhook_url       TEXT,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    in_progress_at    INTEGER,
    finalizing_at     INTEGER,
    completed_at      INTEGER,
    failed_at         INTEGER,
    expired_at        INTEGER,
    cancelling_at     INTEGER,
    cancelled_at      INTEGER,
    total             INTEGER NOT NULL DEFAULT 0,
    completed         INTEGER NOT NULL DEFAULT 0,
    failed            INTEGER NOT NULL DEFAULT 0,
    enqueued          INTEGER NOT NULL DEFAULT 0,
    errors            TEXT,
    output_file_id    TEXT,
    error_file_id     TEXT,
    webhook_done      INTEGER NOT NULL DEFAULT 0
) STRICT;

-- What a driver resumes at start: batches not yet terminal, or whose end's webhook is due.
CREATE INDEX batches_open ON batches (id)
    WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling') OR webhook_done = 0;
