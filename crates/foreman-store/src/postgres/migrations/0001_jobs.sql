-- The whole schema of the PostgreSQL backend as of SQLite's version 7: jobs (with load
-- keys, targets, sync jobs and interruptions), the webhook outbox and its attempt log.
-- Times are unix milliseconds (bigint), as on SQLite: the store has no clock.
-- Text that is ordered or compared by range (job ids, models, load options) is in the
-- "C" collation: byte order, as SQLite's, whatever the database's locale.
--
-- No trigger writes the outbox: the store's code inserts a delivery in the transaction
-- that finishes a job with a webhook URL.

CREATE TABLE jobs (
    id               text    COLLATE "C" NOT NULL PRIMARY KEY,
    kind             text    NOT NULL
        CHECK (kind IN ('chat', 'generate', 'openai_chat', 'openai_completion',
                        'openai_responses', 'anthropic_messages')),
    model            text    COLLATE "C" NOT NULL,
    load_options     text    COLLATE "C" NOT NULL DEFAULT '',
    target           text,
    sync             boolean NOT NULL DEFAULT false,
    interruptions    integer NOT NULL DEFAULT 0 CHECK (interruptions >= 0),
    payload          text    NOT NULL,
    state            text    NOT NULL
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         integer NOT NULL,
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer NOT NULL CHECK (max_attempts >= 1),
    lease_owner      text,
    lease_expires_at bigint,
    run_after        bigint  NOT NULL,
    cancel_requested boolean NOT NULL DEFAULT false,
    result           text,
    failure_status   integer CHECK (failure_status BETWEEN 0 AND 65535),
    failure_message  text,
    idempotency_key  text,
    webhook_url      text,
    metadata         text,
    artifacts        text,
    created_at       bigint  NOT NULL,
    started_at       bigint,
    finished_at      bigint,
    -- A terminal job has a finish time, and only a terminal job has one.
    CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    -- A lease exists exactly while the job runs.
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    -- A running job has been claimed at least once.
    CHECK (state <> 'running' OR attempts >= 1),
    -- Cancelling a queued job cancels it outright, so a queued job never carries the request.
    CHECK (state <> 'queued' OR NOT cancel_requested),
    CHECK ((failure_status IS NULL) = (failure_message IS NULL))
);

-- Idempotency across every instance: a second insert with the same key conflicts here
-- (NULL keys never conflict).
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key);

-- Queue heads per load key, answered by SQL (rows change from every instance).
CREATE INDEX jobs_queue_heads
    ON jobs (state, model, load_options, priority DESC, created_at, id)
    INCLUDE (run_after);

-- Global queue order, for queue positions.
CREATE INDEX jobs_queued_order
    ON jobs (priority DESC, created_at, id)
    WHERE state = 'queued';

-- Lease rescue and recovery: running jobs are few (one per runner of every instance).
CREATE INDEX jobs_running_lease
    ON jobs (lease_expires_at)
    WHERE state = 'running';

-- Pruning of finished jobs.
CREATE INDEX jobs_finished_at
    ON jobs (finished_at)
    WHERE finished_at IS NOT NULL;

-- Listing newest first, filtered by state or model.
CREATE INDEX jobs_state_id ON jobs (state, id);
CREATE INDEX jobs_model_id ON jobs (model, id);

CREATE TABLE webhook_deliveries (
    -- The Standard Webhooks `webhook-id`: constant across retries, the receiver's dedupe key.
    id              text    COLLATE "C" NOT NULL PRIMARY KEY,
    job_id          text    COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    url             text    NOT NULL,
    -- The exact body sent (and signed) on every attempt.
    payload         text    NOT NULL,
    state           text    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    -- When the next attempt is due; a claim moves it to the end of the claim's lease,
    -- so no other instance sends the delivery meanwhile.
    next_attempt_at bigint  NOT NULL,
    created_at      bigint  NOT NULL,
    finished_at     bigint,
    CHECK ((state = 'pending') = (finished_at IS NULL))
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, id)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);

CREATE TABLE webhook_attempts (
    delivery_id text    COLLATE "C" NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    at          bigint  NOT NULL,
    -- The receiver's HTTP status, or NULL when none came (refused, timeout, blocked).
    status      integer,
    latency_ms  bigint  NOT NULL,
    error       text,
    -- When the dispatcher scheduled the next attempt after this one; NULL after the last.
    retry_at    bigint,
    PRIMARY KEY (delivery_id, attempt)
);
