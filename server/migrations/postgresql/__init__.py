"""PostgreSQL's migrations: the same numbers and tables as the SQLite ones beside this package, in PostgreSQL's
words (identity columns where SQLite has rowid, generated columns STORED, jsonb where SQLite has json_extract)."""
