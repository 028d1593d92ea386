-- Each person approves once, whichever of their identities (console, Slack, ...) they use.
CREATE UNIQUE INDEX run_votes_one_per_person ON run_votes (run_id, approver_name);
