//! Who sent a request, once authentication has said so.
//!
//! The auth layer puts a [`Caller`] into a request's extensions when the request
//! was made with a named API key (or the admin token). The routes that enqueue
//! work read it to record whose job it is, and the scheduler uses that record to
//! share a target fairly between callers of equal priority. A request without a
//! caller (foreman running open, with no key and no token) belongs to nobody in
//! particular and is shared as one anonymous caller.

/// The identity the scheduler shares the GPU between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The key's name, as the operator gave it (`admin` for `FOREMAN_TOKEN`).
    pub name: String,
    /// The caller's share of a target relative to other callers (at least 1).
    pub weight: u32,
}

impl Caller {
    /// The caller of a request, if authentication named one.
    pub fn of(extensions: &axum::http::Extensions) -> Option<&Caller> {
        extensions.get::<Caller>()
    }
}
