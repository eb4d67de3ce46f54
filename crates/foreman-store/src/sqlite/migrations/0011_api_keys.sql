-- API keys and their usage. A key is stored as the SHA-256 of its secret (never the
-- secret), a short prefix of it for display, and its grant: the scopes and limits the
-- daemon writes and reads as JSON (the store does not interpret them). Usage is kept
-- per key per hour, added to as requests and jobs happen. See `keys.rs`.
CREATE TABLE api_keys (
    name          TEXT    NOT NULL PRIMARY KEY,
    prefix        TEXT    NOT NULL,
    secret_sha256 BLOB    NOT NULL UNIQUE CHECK (length(secret_sha256) = 32),
    grant_json    TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    last_used_at  INTEGER
) STRICT;

CREATE TABLE key_usage (
    key_name          TEXT    NOT NULL,
    hour              INTEGER NOT NULL,
    requests          INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    gpu_ms            INTEGER NOT NULL DEFAULT 0,
    loads             INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_name, hour)
) STRICT;
