-- When the dispatcher scheduled the next attempt after this one (unix ms); NULL
-- after the last attempt. The attempt log then shows the backoff as it was chosen.
ALTER TABLE webhook_attempts ADD COLUMN retry_at INTEGER;
