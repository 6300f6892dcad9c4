-- The workflow library (as server/migrations/0004_workflows.sql).
CREATE TABLE workflows (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    graph TEXT NOT NULL,
    layout TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX workflows_updated_at ON workflows (updated_at DESC);
ALTER TABLE image_metadata ADD COLUMN workflow TEXT;
