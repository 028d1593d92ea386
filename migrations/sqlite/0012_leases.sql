-- Leader leases: who does the work that must happen once in a cluster (chat polling, the
-- health scheduler, sweeps) and until when. `epoch` grows by one with each new holder and
-- is never reset (a released lease keeps its row), so it fences a stale leader's work.
-- Times are microseconds since the Unix epoch.
CREATE TABLE leases (
    name       TEXT    PRIMARY KEY,
    holder     TEXT,
    epoch      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
