-- Webhook outbox: when a job with a webhook URL reaches a terminal state, the
-- trigger below records its delivery in the same transaction, so a crash can never
-- finish a job and lose its notification. The dispatcher sends pending deliveries,
-- signs each attempt, and records every attempt.

CREATE TABLE webhook_deliveries (
    -- The Standard Webhooks `webhook-id`: constant across retries, the receiver's dedupe key.
    id              TEXT    NOT NULL PRIMARY KEY,
    job_id          TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    url             TEXT    NOT NULL,
    -- The exact body sent (and signed) on every attempt.
    payload         TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    CHECK ((state = 'pending') = (finished_at IS NULL))
) STRICT;

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);

CREATE TABLE webhook_attempts (
    delivery_id TEXT    NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    -- The receiver's HTTP status, or NULL when none came (refused, timeout, blocked).
    status      INTEGER,
    latency_ms  INTEGER NOT NULL,
    error       TEXT,
    PRIMARY KEY (delivery_id, attempt)
) STRICT;

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
