-- Several instances, and the outbox written by the store's code.
--
-- `accepted_by`: the instance id (FOREMAN_INSTANCE_ID) of the foreman that accepted the
-- job. A synchronous job's caller is connected to that instance only, so when it starts
-- again it abandons its own unfinished synchronous jobs, and nobody else's. NULL on jobs
-- accepted before this version.
ALTER TABLE jobs ADD COLUMN accepted_by TEXT;

-- The webhook delivery of a finished job is inserted by the store's code in the write
-- that finishes the job (`sqlite/outbox.rs`), with the body both backends build the same
-- way (`outbox.rs`), so the trigger goes.
DROP TRIGGER IF EXISTS jobs_webhook_outbox;

-- A third kind of named lease: 'instance', one per live instance (name: its id),
-- renewed with its other leases, so that the janitor's holder can tell whose callers are
-- gone. SQLite cannot change a CHECK in place: the small table is rebuilt.
CREATE TABLE target_leases_new (
    kind       TEXT    NOT NULL CHECK (kind IN ('target', 'leader', 'instance')),
    name       TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
) STRICT;
INSERT INTO target_leases_new (kind, name, owner, expires_at)
    SELECT kind, name, owner, expires_at FROM target_leases;
DROP TABLE target_leases;
ALTER TABLE target_leases_new RENAME TO target_leases;
