//! Which scope each route needs, decided from the method and path alone, before any
//! handler runs (so a route added later under a known prefix is covered, and a path no
//! rule knows needs `admin`: closed by default).

use axum::http::Method;

use super::grant::Scope;

/// What a request needs of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any valid key: read-only listings (models, what is loaded, the version).
    AnyKey,
    /// A key holding this scope (or `admin`).
    Scope(Scope),
}

impl Need {
    /// Whether requests of this need name a model to run, so the key's model list and
    /// its daily tokens apply.
    pub fn uses_models(self) -> bool {
        matches!(
            self,
            Need::Scope(Scope::Chat | Scope::Embed | Scope::Jobs | Scope::Batch)
        )
    }
}

/// Paths (exact) any key may read.
const LISTINGS: [&str; 7] = [
    "/",
    "/api/version",
    "/api/tags",
    "/api/ps",
    "/api/show",
    "/v1/models",
    "/openapi.json",
];

const CHAT: [&str; 6] = [
    "/api/chat",
    "/api/generate",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/messages",
];

const EMBED: [&str; 3] = ["/api/embed", "/api/embeddings", "/v1/embeddings"];

const MODELS: [&str; 5] = [
    "/api/pull",
    "/api/push",
    "/api/create",
    "/api/copy",
    "/api/delete",
];

/// Whether `path` is `prefix` or below it (`/jobs`, `/jobs/ID`, not `/jobsx`).
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The need of a request, by its path (a wrong method gets its 405 after the key was
/// checked).
pub fn need(path: &str) -> Need {
    let any = |set: &[&str]| set.iter().any(|prefix| under(path, prefix));
    if LISTINGS.contains(&path) || under(path, "/v1/models") {
        Need::AnyKey
    } else if any(&CHAT) {
        Need::Scope(Scope::Chat)
    } else if any(&EMBED) {
        Need::Scope(Scope::Embed)
    } else if under(path, "/jobs") {
        Need::Scope(Scope::Jobs)
    } else if under(path, "/v1/files") || under(path, "/v1/batches") {
        Need::Scope(Scope::Batch)
    } else if any(&MODELS) || under(path, "/api/blobs") {
        Need::Scope(Scope::Models)
    } else if path == "/metrics" || path == "/foreman/status" || path == "/foreman/targets" {
        Need::Scope(Scope::Metrics)
    } else {
        Need::Scope(Scope::Admin)
    }
}

/// Whether a request of this method and path may put jobs in the queue (so the key's
/// limit on unfinished jobs applies): a POST to a generation route or to `/jobs`.
pub fn enqueues(method: &Method, path: &str) -> bool {
    *method == Method::POST && (CHAT.iter().any(|p| under(path, p)) || path == "/jobs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_their_family_scope() {
        let get = Method::GET;
        let post = Method::POST;
        for (_method, path, expected) in [
            (&post, "/api/chat", Need::Scope(Scope::Chat)),
            (&post, "/v1/messages", Need::Scope(Scope::Chat)),
            (&get, "/v1/responses/resp_1", Need::Scope(Scope::Chat)),
            (&post, "/api/embed", Need::Scope(Scope::Embed)),
            (&post, "/v1/embeddings", Need::Scope(Scope::Embed)),
            (&post, "/jobs", Need::Scope(Scope::Jobs)),
            (&get, "/jobs/01J/events", Need::Scope(Scope::Jobs)),
            (&post, "/v1/files", Need::Scope(Scope::Batch)),
            (&get, "/v1/batches/batch_1", Need::Scope(Scope::Batch)),
            (&post, "/api/pull", Need::Scope(Scope::Models)),
            (&Method::DELETE, "/api/delete", Need::Scope(Scope::Models)),
            (&get, "/metrics", Need::Scope(Scope::Metrics)),
            (&get, "/foreman/status", Need::Scope(Scope::Metrics)),
            (&get, "/foreman/keys", Need::Scope(Scope::Admin)),
            (&get, "/foreman/somethingnew", Need::Scope(Scope::Admin)),
            (&get, "/api/tags", Need::AnyKey),
            (&post, "/api/show", Need::AnyKey),
            (&get, "/v1/models/llama3.2", Need::AnyKey),
            (&get, "/jobsx", Need::Scope(Scope::Admin)),
        ] {
            assert_eq!(need(path), expected, "{path}");
        }
        assert!(enqueues(&post, "/api/generate"));
        assert!(enqueues(&post, "/jobs"));
        assert!(!enqueues(&post, "/jobs/01J/cancel"));
        assert!(!enqueues(&get, "/jobs"));
    }
}
