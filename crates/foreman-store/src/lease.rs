//! Named leases beside the jobs: which instance schedules a target, and which one runs the
//! janitor.
//!
//! Several instances on one PostgreSQL database must not schedule one target twice (two
//! views of its resident models would fight over its memory) nor prune and rescue at once.
//! Each such right is a row of `target_leases`, held by one instance id until it expires;
//! the holder renews it well before that, and any instance takes it once it lapsed. On
//! SQLite there is one process, so the lease is always this process's, and renewing it is
//! one relaxed write.

/// What a lease gives the right to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease<'a> {
    /// Deciding and claiming jobs for the target of this name.
    Target(&'a str),
    /// Pruning finished jobs and rescuing expired job leases (the janitor's leader).
    Janitor,
    /// Being alive: each instance holds the lease named by its own id while it runs, so
    /// that the janitor's holder can tell whose synchronous callers are gone.
    Instance(&'a str),
    /// Driving the batch of this id (`batch_...`) through its states.
    Batch(&'a str),
}

impl Lease<'_> {
    /// The stored `kind` column.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Lease::Target(_) => "target",
            Lease::Janitor => "leader",
            Lease::Instance(_) => "instance",
            // A batch's driver leads its batch; batch ids never read `janitor`.
            Lease::Batch(_) => "leader",
        }
    }

    /// The stored `name` column.
    pub(crate) fn name(&self) -> &str {
        match self {
            Lease::Target(name) | Lease::Instance(name) => name,
            Lease::Janitor => "janitor",
            Lease::Batch(id) => id,
        }
    }
}

/// Who holds a lease and until when (unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub owner: String,
    pub expires_at: i64,
}

/// Takes or renews a lease in one statement: inserted when absent, taken over when this
/// owner already holds it or it has expired, left alone otherwise. One row changed means
/// the caller holds it. `?1` kind, `?2` name, `?3` owner, `?4` now, `?5` new expiry.
pub(crate) const ACQUIRE_SQLITE: &str = "INSERT INTO target_leases (kind, name, owner, expires_at)
     VALUES (?1, ?2, ?3, ?5)
     ON CONFLICT (kind, name) DO UPDATE
     SET owner = excluded.owner, expires_at = excluded.expires_at
     WHERE target_leases.owner = excluded.owner OR target_leases.expires_at <= ?4";

/// [`ACQUIRE_SQLITE`] in PostgreSQL's placeholders.
pub(crate) const ACQUIRE_POSTGRES: &str =
    "INSERT INTO target_leases (kind, name, owner, expires_at)
     VALUES ($1, $2, $3, $5)
     ON CONFLICT (kind, name) DO UPDATE
     SET owner = excluded.owner, expires_at = excluded.expires_at
     WHERE target_leases.owner = excluded.owner OR target_leases.expires_at <= $4";
