-- Who each job belongs to, for fair share between callers.
--
-- `caller`: the name of the API key (or `admin` for the admin token) the job was
-- enqueued with; NULL when foreman runs open. `caller_weight`: that caller's share of a
-- target relative to other callers, as it was at enqueue, so the scheduler reads it
-- from the queue (after a restart too) instead of from process memory.
ALTER TABLE jobs ADD COLUMN caller TEXT;
ALTER TABLE jobs ADD COLUMN caller_weight INTEGER NOT NULL DEFAULT 1 CHECK (caller_weight >= 1);

-- The queue mirror reads every queued job's rank from this index alone, callers
-- included.
DROP INDEX jobs_queued_by_model;
CREATE INDEX jobs_queued_by_model
    ON jobs (model, load_options, priority DESC, created_at, id, run_after, state,
             caller, caller_weight)
    WHERE state = 'queued';
