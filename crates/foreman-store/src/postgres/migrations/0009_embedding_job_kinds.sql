-- Two more job kinds, for a batch's embedding lines: `embed` (/api/embed) and
-- `openai_embedding` (/v1/embeddings).
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('chat', 'generate', 'openai_chat', 'openai_completion',
                    'openai_responses', 'anthropic_messages', 'embed', 'openai_embedding'));
