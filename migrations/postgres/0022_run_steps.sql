-- Steps of multi-step runbooks. A step's row is inserted when it starts (the insert is its
-- claim: (run_id, idx) is unique, so two replicas never run one step twice) and completed
-- by a conditional update when it ends. `runs.current_step` names the step running, so the
-- sweep's notice of an interrupted run can say where it stopped. Rollback steps continue
-- the numbering after the last step that ran.
ALTER TABLE runs ADD COLUMN current_step TEXT;
CREATE TABLE run_steps (
    run_id      BIGINT  NOT NULL REFERENCES runs (id),
    idx         INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    rollback    BOOLEAN NOT NULL,
    state       TEXT    NOT NULL,
    started_at  BIGINT  NOT NULL,
    duration_ms BIGINT,
    code        INTEGER,
    output      TEXT,
    truncated   BOOLEAN,
    PRIMARY KEY (run_id, idx)
);
