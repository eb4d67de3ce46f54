-- Named leases: which instance schedules a target (kind 'target', name the target's
-- name) and which runs the janitor (kind 'leader', name 'janitor'). A row is held by
-- `owner` (an instance id) until `expires_at` (unix ms); the holder renews it, anyone
-- takes it after. See `lease.rs`.
CREATE TABLE target_leases (
    kind       TEXT    NOT NULL CHECK (kind IN ('target', 'leader')),
    name       TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
) STRICT;
