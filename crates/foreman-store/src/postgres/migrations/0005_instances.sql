-- Several instances: who accepted each job, and a lease per live instance.
--
-- `accepted_by`: the instance id (FOREMAN_INSTANCE_ID) of the foreman that accepted the
-- job. A synchronous job's caller is connected to that instance only, so when it starts
-- again it abandons its own unfinished synchronous jobs, and nobody else's; the janitor's
-- holder abandons those of instances whose 'instance' lease is gone (dead, or stopped).
-- NULL on jobs accepted before this version.
ALTER TABLE jobs ADD COLUMN accepted_by text COLLATE "C";

-- The unfinished synchronous jobs, by who accepted them: the janitor's sweep and an
-- instance's start read only these.
CREATE INDEX jobs_unfinished_sync ON jobs (accepted_by)
    WHERE sync AND state IN ('queued', 'running');

ALTER TABLE target_leases DROP CONSTRAINT target_leases_kind_check;
ALTER TABLE target_leases ADD CONSTRAINT target_leases_kind_check
    CHECK (kind IN ('target', 'leader', 'instance'));
