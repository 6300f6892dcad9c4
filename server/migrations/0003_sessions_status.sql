-- The session's status, read from its JSON, so the executor can find queued and running sessions at start-up
-- without decoding every stored session. VIRTUAL: computed on read, so ItemStorage keeps writing only `data`.
ALTER TABLE sessions ADD COLUMN status TEXT GENERATED ALWAYS AS (json_extract(data, '$.status')) VIRTUAL;
CREATE INDEX sessions_status ON sessions (status, updated_at);
