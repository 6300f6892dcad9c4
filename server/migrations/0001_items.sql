-- Generic JSON documents keyed by id (ItemStorage). One table per kind keeps queries and indexes simple.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX sessions_created_at ON sessions (created_at DESC);
