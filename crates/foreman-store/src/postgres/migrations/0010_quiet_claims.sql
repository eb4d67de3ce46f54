-- A claim announces nothing. Migration 2 sent `job:ID` when a job went from queued to
-- running, but no instance acts on it: a long poll and an event stream wait for the end
-- (`end:ID`), a feed relayed from another instance starts with the run's first output
-- batch (`out:ID`) and is cut when its run goes back to the queue (`job:ID`, still sent
-- then). Each NOTIFY takes PostgreSQL's cluster-wide notify lock at its commit, so the
-- claim, a third of every job's commits, no longer queues behind the others' for it.
-- The kinds sent now:
--   new:ID     a job became queued (enqueued, retried, requeued, rescued)
--   job:ID     a running job went back to the queue (retried, requeued, rescued):
--              its run was cut off
--   end:ID     a job ended (succeeded, failed, cancelled)
--   cancel:ID  a running job was asked to stop: the instance running it stops it
-- Heartbeats and claims announce nothing.

CREATE OR REPLACE FUNCTION foreman_job_signal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.state = 'queued' THEN
            PERFORM pg_notify('foreman_jobs', 'new:' || NEW.id);
        ELSIF NEW.finished_at IS NOT NULL THEN
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
