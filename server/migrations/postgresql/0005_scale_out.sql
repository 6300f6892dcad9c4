-- Several servers and workers on one database: the queue's lease on a running session, the workers that
-- announce themselves, and the event stream every server relays to its WebSocket clients.

-- Who runs a session and until when its lease holds; a worker renews it while it works. `cancel_requested` is
-- the flag a server sets (with NOTIFY) for the worker running the session. `model_key` is the main model the
-- graph names, for model affinity.
ALTER TABLE sessions ADD COLUMN lease_owner TEXT;
ALTER TABLE sessions ADD COLUMN lease_expires_at TIMESTAMPTZ;
ALTER TABLE sessions ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE sessions ADD COLUMN model_key TEXT;
-- Invoked with all=false: run the next node only.
ALTER TABLE sessions ADD COLUMN run_one_node BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX sessions_queue ON sessions (status, queued_at, rowid);

-- What each model's file is (size and a hash of its ends, server/graph/model_identity.py), as the first process
-- to use it found it: a worker whose copy differs refuses the session.
CREATE TABLE model_identities (
    key TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE workers (
    name TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    state TEXT NOT NULL,
    session_id TEXT,
    models_loaded TEXT NOT NULL DEFAULT '[]',
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_s DOUBLE PRECISION NOT NULL
);

-- Every event of every process, numbered by one sequence in commit order (inserts take an advisory lock), so
-- each server relays them in `seq` order with no gap; `since` replays from here across servers and restarts.
CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    session_id TEXT,
    frame TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE SEQUENCE event_seq;
