-- Results too large to keep in the row live in files; this lists them as JSON
-- ([{"name","content_type","size"}]), NULL for jobs without any.
ALTER TABLE jobs ADD COLUMN artifacts TEXT;
