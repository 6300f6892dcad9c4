-- Image records and boards (as server/migrations/0002_images.sql).
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
    board_id TEXT,
    starred INTEGER NOT NULL DEFAULT 0,
    rowid BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE TABLE boards (
    board_id TEXT PRIMARY KEY,
    board_name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    cover_image_name TEXT REFERENCES images (image_name) ON DELETE SET NULL,
    rowid BIGINT GENERATED ALWAYS AS IDENTITY
);
ALTER TABLE images ADD FOREIGN KEY (board_id) REFERENCES boards (board_id) ON DELETE SET NULL;
CREATE INDEX boards_created_at ON boards (created_at);
CREATE INDEX images_created_at ON images (created_at, rowid);
CREATE INDEX images_gallery ON images (is_intermediate, image_category, created_at, rowid);
CREATE INDEX images_category ON images (image_category, created_at, rowid);
CREATE INDEX images_board ON images (board_id, created_at, rowid);
CREATE INDEX images_starred ON images (starred, created_at, rowid);
CREATE INDEX images_filters ON images (is_intermediate, image_category, board_id, starred);

CREATE TABLE image_metadata (
    image_name TEXT PRIMARY KEY REFERENCES images (image_name) ON DELETE CASCADE,
    metadata TEXT,
    graph TEXT
);
