-- One row that /readyz rewrites to prove the store accepts writes (a full disk or a
-- read-only replica answers SELECT 1 but fails every write).
CREATE TABLE store_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
