-- Output in flight across instances: the chunks of a running job that its runner writes
-- for readers on other instances (a synchronous caller whose job another instance runs,
-- `/jobs/{id}/events` there). Rows are written in batches, each a statement that also
-- sends `out:ID` on `foreman_jobs` (tiny, like every signal), and read in order after a
-- reader's cursor `(attempt, seq)`. `last` marks the end of an answer, written before
-- the outcome's commit and relayed only once the row is terminal. Rows of finished jobs
-- are deleted by the janitor (`prune_output`); a pruned job takes its rows with it.
CREATE TABLE job_output (
    job_id       text    COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    seq          integer NOT NULL,
    content_type text    NOT NULL,
    bytes        bytea   NOT NULL,
    last         boolean NOT NULL DEFAULT false,
    PRIMARY KEY (job_id, attempt, seq)
);
