-- OpenAI's Batch API: uploaded and produced files (their bytes are on disk under the
-- data directory; this is their record) and batches, each driven through OpenAI's states.
-- A batch's lines are ordinary jobs whose idempotency key is 'batch:<batch id>:<line>'.
CREATE TABLE files (
    id         text   NOT NULL PRIMARY KEY,
    purpose    text   NOT NULL,
    filename   text   NOT NULL,
    bytes      bigint NOT NULL,
    lines      bigint NOT NULL,
    created_at bigint NOT NULL
);

CREATE TABLE batches (
    id                text   NOT NULL PRIMARY KEY,
    endpoint          text   NOT NULL,
    input_file_id     text   NOT NULL,
    completion_window text   NOT NULL,
    status            text   NOT NULL CHECK (status IN ('validating', 'failed', 'in_progress',
        'finalizing', 'completed', 'expired', 'cancelling', 'cancelled')),
    ending            text   CHECK (ending IN ('completed', 'expired', 'cancelled')),
    metadata          text,
    webhook_url       text,
    created_at        bigint NOT NULL,
    expires_at        bigint NOT NULL,
    in_progress_at    bigint,
    finalizing_at     bigint,
    completed_at      bigint,
    failed_at         bigint,
    expired_at        bigint,
    cancelling_at     bigint,
    cancelled_at      bigint,
    total             bigint NOT NULL DEFAULT 0,
    completed         bigint NOT NULL DEFAULT 0,
    failed            bigint NOT NULL DEFAULT 0,
    enqueued          bigint NOT NULL DEFAULT 0,
    errors            text,
    output_file_id    text,
    error_file_id     text,
    webhook_done      boolean NOT NULL DEFAULT false
);

-- What a driver resumes at start: batches not yet terminal, or whose end's webhook is due.
CREATE INDEX batches_open ON batches (id)
    WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling') OR NOT webhook_done;
