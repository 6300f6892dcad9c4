-- Generic JSON documents keyed by id (ItemStorage). `rowid` keeps SQLite's name so the shared SQL can break
-- created_at ties in insertion order on both engines.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    rowid BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX sessions_created_at ON sessions (created_at DESC);
