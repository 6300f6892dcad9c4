-- Image records and boards. One folder holds every image file whatever its origin, so there is no origin column.
CREATE TABLE boards (
    board_id TEXT PRIMARY KEY,
    board_name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    -- Set by PATCH; NULL means "the board's newest image".
    cover_image_name TEXT REFERENCES images (image_name) ON DELETE SET NULL
);
CREATE INDEX boards_created_at ON boards (created_at);

CREATE TABLE images (
    image_name TEXT PRIMARY KEY,
    image_category TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    is_intermediate INTEGER NOT NULL DEFAULT 0,
    session_id TEXT,
    node_id TEXT,
    board_id TEXT REFERENCES boards (board_id) ON DELETE SET NULL,
    starred INTEGER NOT NULL DEFAULT 0
);
-- Each list filter has an index ending in created_at, so "newest first, 100 rows" reads 100 index entries
-- instead of sorting every match. The unfiltered list walks images_created_at.
CREATE INDEX images_created_at ON images (created_at);
CREATE INDEX images_gallery ON images (is_intermediate, image_category, created_at);
CREATE INDEX images_category ON images (image_category, created_at);
CREATE INDEX images_board ON images (board_id, created_at);
CREATE INDEX images_starred ON images (starred, created_at);
-- `total` of a filtered list: a covering index with every filter column, so count(*) reads index entries only
-- (records.py names it with INDEXED BY and turns absent filters into IN lists, so every column is a seek).
CREATE INDEX images_filters ON images (is_intermediate, image_category, board_id, starred);

-- Raw JSON strings kept beside the record, out of the list queries' way: `metadata` is CoreMetadata (or the
-- parsed metadata of a foreign tool), `graph` is kept only for images that have no session to read it from.
CREATE TABLE image_metadata (
    image_name TEXT PRIMARY KEY REFERENCES images (image_name) ON DELETE CASCADE,
    metadata TEXT,
    graph TEXT
);
