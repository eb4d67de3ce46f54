-- Signals across instances: every change a waiter on another instance cares about is
-- announced on the channel `foreman_jobs` by the statement that makes it, so it is
-- delivered at that statement's (or its transaction's) commit and never before the row
-- is visible, and never when it rolls back. A trigger reaches every statement that
-- changes a job's state, whoever writes it. Payloads are `KIND:ID` (a kind word and a
-- 26-character job id), far under PostgreSQL's 8,000-byte limit:
--   new:ID     a job became queued (enqueued, retried, requeued): runners look for work
--   job:ID     a job changed state without ending (claimed)
--   end:ID     a job ended (succeeded, failed, cancelled)
--   cancel:ID  a running job was asked to stop: the instance running it stops it
-- Heartbeats (lease times only) announce nothing.

CREATE FUNCTION foreman_job_signal() RETURNS trigger LANGUAGE plpgsql AS $$
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
        ELSE
            PERFORM pg_notify('foreman_jobs', 'job:' || NEW.id);
        END IF;
        IF NEW.state = 'queued' THEN
            PERFORM pg_notify('foreman_jobs', 'new:' || NEW.id);
        END IF;
    END IF;
    IF NEW.cancel_requested AND NOT OLD.cancel_requested THEN
        PERFORM pg_notify('foreman_jobs', 'cancel:' || NEW.id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_signal
    AFTER INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION foreman_job_signal();
