-- The job table: one row per accepted generation request, from enqueue until pruning.
-- Times are unix milliseconds. Ids are ULID text, which sorts by creation time.
CREATE TABLE jobs (
    id               TEXT    NOT NULL PRIMARY KEY,
    kind             TEXT    NOT NULL
        CHECK (kind IN ('chat', 'generate', 'openai_chat', 'openai_completion')),
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
