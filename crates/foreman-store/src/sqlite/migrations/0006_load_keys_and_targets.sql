-- Load keys and targets.
--
-- `load_options`: the request options that make Ollama reload a model's runner when
-- they change (num_ctx, num_batch, ...), in a canonical text form; '' for none. The
-- scheduler drains by model plus these, so the queue-mirror index carries them.
--
-- `target`: the target (Ollama server) the current or last attempt ran on.
ALTER TABLE jobs ADD COLUMN load_options TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN target TEXT;

DROP INDEX jobs_queued_by_model;
CREATE INDEX jobs_queued_by_model
    ON jobs (model, load_options, priority DESC, created_at, id, run_after, state)
    WHERE state = 'queued';
