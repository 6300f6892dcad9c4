-- The session's status (and when it was queued) read from its JSON, for the queue's queries.
ALTER TABLE sessions ADD COLUMN status TEXT GENERATED ALWAYS AS ((data::jsonb) ->> 'status') STORED;
ALTER TABLE sessions ADD COLUMN queued_at TEXT GENERATED ALWAYS AS ((data::jsonb) ->> 'queued_at') STORED;
CREATE INDEX sessions_status ON sessions (status, updated_at);
