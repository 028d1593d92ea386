-- Approval gates in the middle of a runbook's steps, and values steps publish.
-- A gate is a request of its own (a `runs` row, so votes, reactions, /approve, /deny and
-- expiry work as for any request) naming the run it holds (`gate_of`) and the step it is
-- (`gate_step`); the held run waits in state `waiting`, holding no lease.
ALTER TABLE runs ADD COLUMN gate_of BIGINT REFERENCES runs (id);
ALTER TABLE runs ADD COLUMN gate_step INTEGER;
CREATE INDEX runs_by_gate ON runs (gate_of) WHERE gate_of IS NOT NULL;
-- The value a step published (already validated and redacted), for the steps after it.
ALTER TABLE run_steps ADD COLUMN published TEXT;
-- A posted message that becomes the approval message of a request (a gate reached while
-- nobody was being answered): the deliverer's mark binds the run to the message's id.
ALTER TABLE outbox ADD COLUMN binds_run BIGINT;
-- `/cancel` of a running run of steps: who asked. Its process sees it between polls, kills
-- the current step's process group and stops (rolling back when the file says so).
ALTER TABLE runs ADD COLUMN cancel_requested TEXT;
-- `/retry ID [from STEP]`: a new request running the steps of run `retry_of` from
-- `from_step`; the steps before it are copied into its `run_steps` (their marks and the
-- values they published) when it is created.
ALTER TABLE runs ADD COLUMN retry_of BIGINT REFERENCES runs (id);
ALTER TABLE runs ADD COLUMN from_step INTEGER;
