-- An enqueue announces its job after its commit, not inside it. Migration 10 kept
-- `new:ID` on the INSERT of a queued job, so every enqueue's commit held PostgreSQL's
-- cluster-wide notify lock through its WAL flush: concurrent enqueues were flushed one
-- by one instead of together. The store now sends `new:ID` itself once the enqueue has
-- committed, in a statement of its own that commits asynchronously (no flush to wait
-- for under the lock). Losing that announcement (foreman dies in between) delays the
-- job by at most a runner's idle poll: runners look at the queue every 250 ms anyway.
-- The kinds sent by this trigger now:
--   job:ID + new:ID  a running job went back to the queue (retried, requeued, rescued)
--   end:ID           a job ended (succeeded, failed, cancelled)
--   cancel:ID        a running job was asked to stop: the instance running it stops it
-- Enqueues (`new:ID`), claims and heartbeats send nothing from here.

CREATE OR REPLACE FUNCTION foreman_job_signal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.finished_at IS NOT NULL THEN
            PERFORM pg_notify('foreman_jobs', 'end:' || NEW.id);
        END IF;
        RETURN NULL;
    END IF;
    IF NEW.state IS DISTINCT FROM OLD.state THEN
        IF NEW.finished_at IS NOT NULL THEN
            PERFORM pg_notify('foreman_jobs', 'end:' || NEW.id);
        ELSIF NEW.state = 'queued' THEN
            PERFORM pg_notify('foreman_jobs', 'job:' || NEW.id);
            PERFORM pg_notify('foreman_jobs', 'new:' || NEW.id);
        END IF;
    END IF;
    IF NEW.cancel_requested AND NOT OLD.cancel_requested THEN
        PERFORM pg_notify('foreman_jobs', 'cancel:' || NEW.id);
    END IF;
    RETURN NULL;
END
$$;
