-- The workflow library: a graph plus how the editor draws it. `graph` and `layout` are raw JSON strings (the
-- validated graph, and {node_id: {x, y}} or NULL). `name_key` is the name case-folded in Python (SQLite's
-- NOCASE folds ASCII only), so "Portrait" and "PORTRAIT" cannot both exist; it is also what `q` searches.
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

-- What an image made by a saved workflow carries in its `imagegraph_workflow` PNG chunk ({"id", "name",
-- "layout"} as raw JSON), so /metadata hands it out without reading the file.
ALTER TABLE image_metadata ADD COLUMN workflow TEXT;
