-- Who waits for a job, and how often it was interrupted.
--
-- `sync`: 1 when a caller waits for the answer on its connection (the Ollama, OpenAI
-- and Anthropic routes), 0 for the jobs API. A restart loses every such connection,
-- so the next start cancels the sync jobs it finds unfinished instead of running them
-- for nobody.
--
-- `interruptions`: how many attempts were taken back from a process that died or lost
-- its lease. They do not count against `max_attempts` (only failures the target
-- returns do), and a job interrupted too often fails.
ALTER TABLE jobs ADD COLUMN sync INTEGER NOT NULL DEFAULT 0 CHECK (sync IN (0, 1));
ALTER TABLE jobs ADD COLUMN interruptions INTEGER NOT NULL DEFAULT 0 CHECK (interruptions >= 0);
