//! Which targets this instance schedules, and whether it runs the janitor.
//!
//! On a shared (PostgreSQL) database several instances may be given the same targets;
//! each target must be scheduled by one of them at a time, since the drain-by-model
//! policy needs one view of what the target holds loaded. Each target is therefore a
//! lease in the store ([`Lease::Target`]), and the janitor's pruning and rescue a lease
//! too ([`Lease::Janitor`]). The [`LeaseKeeper`] takes or renews them every third of
//! `FOREMAN_LEASE_TTL`; an [`Ownership`] says whether this instance holds one *now*: a
//! lease counts as held only until the expiry its last renewal set, so an instance whose
//! renewals fail or stall stops scheduling the target before another can take it over.
//! A failed renewal or one refused (another instance took it) drops it at once.
//!
//! Each instance also holds a lease named by its own id ([`Lease::Instance`]) while it
//! runs, renewed with the others and released at a clean shutdown: the janitor's holder
//! abandons the synchronous jobs of instances without one (see `janitor`).
//!
//! On SQLite there is one process per database file, so every lease is held for good
//! and nothing is written: a restarted process (with a new default instance id) must not
//! wait for its predecessor's lease to lapse.

use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use foreman_store::{Lease, Store};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::targets::Targets;

/// Whether this instance holds one lease, as its last renewal left it.
#[derive(Debug)]
pub struct Ownership {
    /// Unix ms until which the lease is this instance's; 0 when it is not.
    held_until: AtomicI64,
    /// When another instance's lease on it expires, as last read; 0 when none was seen.
    theirs_until: AtomicI64,
    /// The holder last seen (this instance when held); `None` before the first look.
    owner: RwLock<Option<String>>,
}

impl Default for Ownership {
    fn default() -> Ownership {
        Ownership {
            held_until: AtomicI64::new(0),
            theirs_until: AtomicI64::new(0),
            owner: RwLock::new(None),
        }
    }
}

impl Ownership {
    /// A lease held for good (one process on the database).
    pub fn held_for_good(owner: &str) -> Ownership {
        Ownership {
            held_until: AtomicI64::new(i64::MAX),
            theirs_until: AtomicI64::new(0),
            owner: RwLock::new(Some(owner.to_owned())),
        }
    }

    /// Whether this instance may act on the lease at `now` (unix ms).
    pub fn held(&self, now: i64) -> bool {
        self.held_until.load(Ordering::SeqCst) > now
    }

    /// The holder last seen: this instance's id while it holds the lease.
    pub fn owner(&self) -> Option<String> {
        self.owner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, held_until: i64, owner: Option<String>) {
        self.held_until.store(held_until, Ordering::SeqCst);
        self.theirs_until.store(0, Ordering::SeqCst);
        *self.owner.write().unwrap_or_else(|e| e.into_inner()) = owner;
    }
}

/// Takes and renews this instance's leases: one per target, and the janitor's.
pub struct LeaseKeeper {
    pub store: Store,
    pub targets: Arc<Targets>,
    /// The janitor's lease, read by the janitor before each sweep.
    pub janitor: Arc<Ownership>,
    pub instance: String,
    /// How long a lease lasts without renewal (`FOREMAN_LEASE_TTL`).
    pub ttl: Duration,
}

impl LeaseKeeper {
    /// Takes what it can once, so that a starting instance schedules its targets before
    /// its runners first ask. On SQLite every lease is held for good, and nothing is
    /// written, now or later.
    pub async fn start(&self) {
        if !self.store.is_shared() {
            for target in self.targets.all() {
                target.ownership.set(i64::MAX, Some(self.instance.clone()));
            }
            self.janitor.set(i64::MAX, Some(self.instance.clone()));
            return;
        }
        self.renew_all().await;
    }

    /// Renews every `ttl / 3` (sooner when another instance's lease expires before that,
    /// so that a dead holder's target is taken within `ttl` of its last renewal) until
    /// `stop`, then releases what it holds so that another
    /// instance takes it at once. `stop` is cancelled once this instance's runners have
    /// ended, so the leases stay held while their jobs finish or are requeued.
    pub async fn run(self, stop: CancellationToken) {
        if !self.store.is_shared() {
            return;
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.next_renewal()) => {}
            }
            self.renew_all().await;
        }
        for target in self.targets.all() {
            target.ownership.set(0, None);
            self.release(Lease::Target(&target.name)).await;
        }
        self.janitor.set(0, None);
        self.release(Lease::Janitor).await;
        // Gone: the synchronous jobs it accepted (their callers were told to retry) are
        // abandoned by the janitor's holder, unless it starts again first.
        self.release(Lease::Instance(&self.instance)).await;
    }

    /// How long until the next round: a third of the TTL, or just past the earliest
    /// expiry of a lease another instance holds, if that comes first.
    fn next_renewal(&self) -> Duration {
        let now = now_ms();
        let regular = self.ttl / 3;
        self.targets
            .all()
            .iter()
            .map(|target| &target.ownership)
            .chain(std::iter::once(&*self.janitor))
            .map(|ownership| ownership.theirs_until.load(Ordering::SeqCst))
            .filter(|&expiry| expiry > 0)
            .map(|expiry| {
                // A few milliseconds past it, so the store sees it expired.
                Duration::from_millis(u64::try_from((expiry - now).max(0) + 5).unwrap_or(5))
            })
            .fold(regular, Duration::min)
    }

    async fn renew_all(&self) {
        for target in self.targets.all() {
            let was_held = target.ownership.held(now_ms());
            self.renew(Lease::Target(&target.name), &target.ownership)
                .await;
            let held = target.ownership.held(now_ms());
            if held != was_held {
                tracing::info!(
                    target = %target.name,
                    owner = target.ownership.owner().as_deref().unwrap_or("nobody"),
                    "{}",
                    if held {
                        "this instance now schedules the target"
                    } else {
                        "this instance no longer schedules the target"
                    }
                );
                if held {
                    // What it holds loaded comes from a fresh /api/ps (see the dispatcher).
                    target.inventory.refresh_soon();
                }
            }
        }
        // This instance's own lease says it is alive: while it runs, the janitor's holder
        // leaves the synchronous jobs it accepted alone.
        let now = now_ms();
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        match self
            .store
            .acquire_lease(Lease::Instance(&self.instance), &self.instance, now, ttl_ms)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::error!(
                instance = %self.instance,
                "another live instance has this instance id; give each instance its own FOREMAN_INSTANCE_ID"
            ),
            Err(error) => tracing::warn!(%error, "cannot renew this instance's lease"),
        }
        let was_leader = self.janitor.held(now_ms());
        self.renew(Lease::Janitor, &self.janitor).await;
        if self.janitor.held(now_ms()) != was_leader {
            tracing::info!(
                leader = !was_leader,
                "{}",
                if was_leader {
                    "this instance no longer runs the janitor"
                } else {
                    "this instance runs the janitor"
                }
            );
        }
    }

    /// One renewal: held until `now + ttl` (the time before the call, so never later than
    /// the expiry the store recorded), or not held at all when refused or failed.
    async fn renew(&self, lease: Lease<'_>, ownership: &Ownership) {
        let now = now_ms();
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        match self
            .store
            .acquire_lease(lease, &self.instance, now, ttl_ms)
            .await
        {
            Ok(true) => ownership.set(now.saturating_add(ttl_ms), Some(self.instance.clone())),
            Ok(false) => {
                let holder = self.store.lease_holder(lease).await.ok().flatten();
                ownership.set(0, holder.as_ref().map(|holder| holder.owner.clone()));
                if let Some(holder) = holder {
                    ownership
                        .theirs_until
                        .store(holder.expires_at, Ordering::SeqCst);
                }
            }
            Err(error) => {
                tracing::warn!(%error, ?lease, "cannot renew a lease; letting it go");
                ownership.set(0, None);
            }
        }
    }

    async fn release(&self, lease: Lease<'_>) {
        if let Err(error) = self.store.release_lease(lease, &self.instance).await {
            tracing::warn!(%error, ?lease, "cannot release a lease; it lapses by itself");
        }
    }
}
