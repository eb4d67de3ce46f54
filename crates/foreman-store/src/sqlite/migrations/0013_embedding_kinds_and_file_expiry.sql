-- Two more job kinds, for a batch's embedding lines: `embed` (/api/embed) and
-- `openai_embedding` (/v1/embeddings).
--
-- Widening a CHECK needs no table rebuild: every row valid before is valid after, so
-- the table's stored definition is edited in place (SQLite's documented procedure for
-- changing a CHECK constraint, `PRAGMA writable_schema`). Unlike a rebuild, this keeps
-- whatever columns other migrations added to `jobs`, whichever order they ran in.
-- `RESET` makes this connection read the new definition; the table created and dropped
-- at the end bumps the schema cookie, so every other connection reads it too.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, '''anthropic_messages'')',
                     '''anthropic_messages'', ''embed'', ''openai_embedding'')')
 WHERE type = 'table' AND name = 'jobs';
PRAGMA writable_schema = RESET;
CREATE TABLE foreman_schema_cookie_bump (unused INTEGER);
DROP TABLE foreman_schema_cookie_bump;

-- A file's expiry (OpenAI's `expires_at`, unix milliseconds here); NULL keeps it until
-- it is deleted. The janitor's leader removes the files past it.
ALTER TABLE files ADD COLUMN expires_at INTEGER;
CREATE INDEX files_expires_at ON files (expires_at) WHERE expires_at IS NOT NULL;
