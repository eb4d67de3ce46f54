-- Two more job kinds, for a batch's embedding lines: `embed` (/api/embed) and
-- `openai_embedding` (/v1/embeddings).
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('chat', 'generate', 'openai_chat', 'openai_completion',
                    'openai_responses', 'anthropic_messages', 'embed', 'openai_embedding'));

-- A file's expiry (OpenAI's `expires_at`, unix milliseconds here); NULL keeps it until
-- it is deleted. The janitor's leader removes the files past it.
ALTER TABLE files ADD COLUMN expires_at bigint;
CREATE INDEX files_expires_at ON files (expires_at) WHERE expires_at IS NOT NULL;
