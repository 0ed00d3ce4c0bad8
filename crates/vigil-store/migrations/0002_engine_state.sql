-- The verifier engine's per-node snapshot (vigil_core::attestation::NodeSnapshot as
-- JSON): what the typed columns do not hold (the notice gate, reachability streak,
-- IMA bank, request counter), so a restarted verifier resumes each node exactly.
-- NULL until the first round is recorded; the typed columns stay the queryable view.
ALTER TABLE verifier_agents ADD COLUMN engine_state TEXT;
