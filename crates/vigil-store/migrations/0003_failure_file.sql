-- The file an IMA failure event is about (vigil_core::failure::Event::file): Keylime's
-- runtime_policy_hash context names no file. NULL for every other event.
ALTER TABLE agent_failures ADD COLUMN file TEXT;
