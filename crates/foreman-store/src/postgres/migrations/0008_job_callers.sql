-- Who each job belongs to, for fair share between callers.
--
-- `caller`: the name of the API key (or `admin` for the admin token) the job was
-- enqueued with; NULL when foreman runs open. `caller_weight`: that caller's share of a
-- target relative to other callers, as it was at enqueue, so every instance's scheduler
-- reads it from the queue.
ALTER TABLE jobs ADD COLUMN caller text COLLATE "C";
ALTER TABLE jobs ADD COLUMN caller_weight integer NOT NULL DEFAULT 1 CHECK (caller_weight >= 1);

-- Queue heads per load key and caller, answered by SQL.
DROP INDEX jobs_queue_heads;
CREATE INDEX jobs_queue_heads
    ON jobs (state, model, load_options, caller, priority DESC, created_at, id)
    INCLUDE (run_after, caller_weight);
