#!/usr/bin/env python3
"""The Keylime side of Vigil's IMA differential tests.

Runs Keylime's own `keylime.ima.ima.process_measurement_list` — the function its verifier
calls for every quote — on a batch of cases and prints Keylime's verdicts as JSON.
Run it with the Python of the venv made by scripts/keylime-reference.sh.

Input (a file argument, or stdin): a JSON list of cases
  {"log": PATH, "policy": PATH or null, "bank": "sha1"|"sha256"|...,
   "pcr": HEX or null, "from_entry": N (optional), "from_pcr": HEX (optional)}
Output (stdout): a JSON list with one result per case
  {"running_pcr": HEX, "pcr_match": N or null,
   "failures": [{"event_id": ..., "context": {...}}], "error": null or TEXT}
`pcr_match` is the number of lines of the batch replayed when the quoted PCR matched
(0 = before any line), observed through the state update Keylime makes at the match.
"""
import json
import logging
import sys

from keylime.agentstates import AgentAttestState
from keylime.common.algorithms import Hash
from keylime.ima import file_signatures, ima

logging.disable(logging.CRITICAL)


def run_case(case):
    with open(case["log"], encoding="utf-8") as f:
        lines = f.read().split("\n")
    policy = None
    if case.get("policy"):
        with open(case["policy"], encoding="utf-8") as f:
            policy = ima.deserialize_runtime_policy(f.read())

    state = AgentAttestState("oracle")
    bank = Hash(case["bank"])
    if case.get("from_entry"):
        state.update_ima_attestation(10, bytes.fromhex(case["from_pcr"]), case["from_entry"])

    matches = []
    original_update = state.update_ima_attestation

    def recording_update(pcr_num, pcr_value, num_ml_entries):
        matches.append(num_ml_entries)
        original_update(pcr_num, pcr_value, num_ml_entries)

    state.update_ima_attestation = recording_update

    # As the verifier does: learned keyrings plus the tenant keyring from the policy.
    keyrings = state.get_ima_keyrings()
    if policy is not None:
        keyrings.set_tenant_keyring(file_signatures.ImaKeyring.from_string(policy["verification-keys"]))

    running, failure = ima.process_measurement_list(
        state, lines, policy, pcrval=case.get("pcr"), ima_keyrings=keyrings, hash_alg=bank
    )
    events = [{"event_id": e.event_id, "context": json.loads(e.context)} for e in failure.events]
    if case.get("pcr") is None:
        pcr_match = None
    elif matches:
        pcr_match = matches[0]
    elif any(e["event_id"] == "ima.pcr_mismatch" for e in events):
        pcr_match = None
    else:
        pcr_match = 0
    return {"running_pcr": running, "pcr_match": pcr_match, "failures": events, "error": None}


def main():
    source = open(sys.argv[1], encoding="utf-8") if len(sys.argv) > 1 else sys.stdin
    cases = json.load(source)
    results = []
    for case in cases:
        try:
            results.append(run_case(case))
        except Exception as exc:  # a Keylime crash is a result worth comparing too
            results.append({"running_pcr": None, "pcr_match": None, "failures": [], "error": repr(exc)})
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
