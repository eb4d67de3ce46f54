-- Two more job kinds: `openai_responses` (/v1/responses) and `anthropic_messages`
-- (/v1/messages). SQLite cannot change a CHECK constraint in place, so the table is
-- rebuilt with the same columns, constraints, indexes and trigger.
--
-- This runs in a transaction with foreign keys on, where dropping `jobs` deletes the
-- webhook rows that reference it (ON DELETE CASCADE): they are set aside and put back.
CREATE TEMP TABLE saved_webhook_deliveries AS SELECT * FROM webhook_deliveries;
CREATE TEMP TABLE saved_webhook_attempts AS SELECT * FROM webhook_attempts;

CREATE TABLE jobs_new (
    id               TEXT    NOT NULL PRIMARY KEY,
    kind             TEXT    NOT NULL
        CHECK (kind IN ('chat', 'generate', 'openai_chat', 'openai_completion',
                       'openai_responses', 'anthropic_messages')),
    model            TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    state            TEXT    NOT NULL
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    run_after        INTEGER NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    result           TEXT,
    failure_status   INTEGER CHECK (failure_status BETWEEN 0 AND 65535),
    failure_message  TEXT,
    idempotency_key  TEXT,
    webhook_url      TEXT,
    metadata         TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    artifacts        TEXT,
    -- A terminal job has a finish time, and only a terminal job has one.
    CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    -- A lease exists exactly while the job runs.
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    -- A running job has been claimed at least once.
    CHECK (state <> 'running' OR attempts >= 1),
    -- Cancelling a queued job cancels it outright, so a queued job never carries the request.
    CHECK (state <> 'queued' OR cancel_requested = 0),
    CHECK ((failure_status IS NULL) = (failure_message IS NULL))
) STRICT;

INSERT INTO jobs_new (id, kind, model, payload, state, priority, attempts, max_attempts, lease_owner,
    lease_expires_at, run_after, cancel_requested, result, failure_status, failure_message,
    idempotency_key, webhook_url, metadata, created_at, started_at, finished_at, artifacts)
SELECT id, kind, model, payload, state, priority, attempts, max_attempts, lease_owner,
    lease_expires_at, run_after, cancel_requested, result, failure_status, failure_message,
    idempotency_key, webhook_url, metadata, created_at, started_at, finished_at, artifacts
FROM jobs;

DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;


-- Idempotency: a second insert with the same key conflicts here (NULL keys never conflict).
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key);

-- Per-model queue heads, in the order the scheduler picks within a model. Covering (state
-- included) so the heads query never touches the table.
CREATE INDEX jobs_queued_by_model
    ON jobs (model, priority DESC, created_at, id, run_after, state)
    WHERE state = 'queued';

-- Global queue order, for queue positions (covering, like the one above).
CREATE INDEX jobs_queued_order
    ON jobs (priority DESC, created_at, id, state)
    WHERE state = 'queued';

-- Pruning of finished jobs.
CREATE INDEX jobs_finished_at
    ON jobs (finished_at)
    WHERE finished_at IS NOT NULL;

-- Listing newest first, filtered by state or model. The state index also serves lease rescue
-- (running jobs are few: one per worker slot).
CREATE INDEX jobs_state_id ON jobs (state, id);
CREATE INDEX jobs_model_id ON jobs (model, id);

CREATE TRIGGER jobs_webhook_outbox
AFTER UPDATE OF state ON jobs
WHEN NEW.webhook_url IS NOT NULL
 AND NEW.state IN ('succeeded', 'failed', 'cancelled')
 AND OLD.state NOT IN ('succeeded', 'failed', 'cancelled')
BEGIN
    INSERT INTO webhook_deliveries (id, job_id, url, payload, state, next_attempt_at, created_at)
    VALUES (
        'msg_' || lower(hex(randomblob(12))),
        NEW.id,
        NEW.webhook_url,
        json_object(
            'type', 'job.' || NEW.state,
            'timestamp', strftime('%Y-%m-%dT%H:%M:%fZ', NEW.finished_at / 1000.0, 'unixepoch'),
            'data', json_object(
                'id', NEW.id,
                'state', NEW.state,
                'kind', NEW.kind,
                'model', NEW.model,
                'attempts', NEW.attempts,
                'error', CASE WHEN NEW.failure_message IS NULL THEN NULL
                              ELSE json_object('status', NEW.failure_status, 'message', NEW.failure_message) END,
                'metadata', CASE WHEN NEW.metadata IS NULL THEN NULL ELSE json(NEW.metadata) END,
                'url', '/jobs/' || NEW.id
            )
        ),
        'pending',
        NEW.finished_at,
        NEW.finished_at
    );
END;

INSERT INTO webhook_deliveries SELECT * FROM saved_webhook_deliveries;
INSERT INTO webhook_attempts SELECT * FROM saved_webhook_attempts;
DROP TABLE saved_webhook_deliveries;
DROP TABLE saved_webhook_attempts;
