-- Find the latest rollout of a target quickly (drift checks on idle targets).
CREATE INDEX rollouts_target ON rollouts (target, created_at);
