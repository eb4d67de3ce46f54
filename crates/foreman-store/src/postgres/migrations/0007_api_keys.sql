-- API keys and their usage. A key is stored as the SHA-256 of its secret (never the
-- secret), a short prefix of it for display, and its grant: the scopes and limits the
-- daemon writes and reads as JSON (the store does not interpret them). Usage is kept
-- per key per hour, added to as requests and jobs happen. See `keys.rs`.
CREATE TABLE api_keys (
    name          text   NOT NULL PRIMARY KEY,
    prefix        text   NOT NULL,
    secret_sha256 bytea  NOT NULL UNIQUE CHECK (length(secret_sha256) = 32),
    grant_json    text   NOT NULL,
    created_at    bigint NOT NULL,
    revoked_at    bigint,
    last_used_at  bigint
);

CREATE TABLE key_usage (
    key_name          text   NOT NULL,
    hour              bigint NOT NULL,
    requests          bigint NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    gpu_ms            bigint NOT NULL DEFAULT 0,
    loads             bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (key_name, hour)
);
