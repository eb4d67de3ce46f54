-- Whose batch it is: the caller (API key name, `admin` for the admin token; NULL when
-- foreman runs open) and its weight when the batch was created. The batch's lines are
-- queued later, by the batch driver, not by the creating request, so they take their
-- caller from here: they share the GPU as that key's jobs and are booked to its usage.
ALTER TABLE batches ADD COLUMN caller text;
ALTER TABLE batches ADD COLUMN caller_weight integer NOT NULL DEFAULT 1 CHECK (caller_weight >= 1);
