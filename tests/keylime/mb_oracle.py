#!/usr/bin/env python3
"""The Keylime side of Vigil's measured-boot differential tests.

Runs Keylime's own code on a batch of cases and prints its answers as JSON:
- "create": `keylime.policy.create_mb_policy.create_mb_refstate`, what
  `keylime-policy create measured-boot -e LOG [-i]` runs;
- "evaluate": `keylime.mba.elchecking.elchecker.bootlog_evaluate`, what the verifier
  runs for every quote, with the log parsed by Keylime's parser (tpm2_eventlog and its
  enrichment, which needs libefivar.so.1) and `measured_boot_policy_name` set per case.
Run it with the Python of the venv made by scripts/keylime-reference.sh.

Input (a file argument, or stdin): a JSON list of cases
  {"op": "create", "log": PATH, "without_secureboot": BOOL}
  {"op": "evaluate", "log": PATH, "refstate": JSON TEXT, "policy": NAME, "pcrs": [N, ...]}
Output (stdout): a JSON list with one result per case
  create:   {"refstate": {...} or null, "log_parsed": BOOL, "error": null or TEXT}
  evaluate: {"failures": [{"event_id": ..., "context": ..., "recoverable": ...}],
             "parse_failures": [EVENT_ID, ...], "error": null or TEXT}
"""
import argparse
import json
import logging
import os
import sys
import tempfile

from keylime import config
from keylime.mba.elchecking import elchecker, example  # noqa: F401  (registers "example")
from keylime.mba.elparsing.tpm2_tools_elparser import parse_binary_bootlog
from keylime.policy import create_mb_policy

logging.disable(logging.CRITICAL)

_parsed = {}


def parsed_log(path):
    if path not in _parsed:
        with open(path, "rb") as f:
            failure, data = parse_binary_bootlog(f.read())
        _parsed[path] = ([e.event_id for e in failure.events], data)
    return _parsed[path]


def create(case):
    try:
        parsed = parsed_log(case["log"])[1] is not None
    except Exception:  # tpm2_eventlog output that is not YAML
        parsed = False
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        args = argparse.Namespace(
            eventlog_file=case["log"], without_secureboot=case["without_secureboot"], output=out
        )
        refstate = create_mb_policy.create_mb_refstate(args)
        return {"refstate": refstate, "log_parsed": parsed, "error": None}
    except Exception as exc:  # Keylime lets some malformed logs raise
        return {"refstate": None, "log_parsed": parsed, "error": repr(exc)}
    finally:
        os.unlink(out)


def evaluate(case):
    try:
        parse_failures, data = parsed_log(case["log"])
    except Exception as exc:
        return {"failures": [], "parse_failures": [], "error": repr(exc)}
    if data is None:
        return {"failures": [], "parse_failures": parse_failures, "error": "log did not parse"}
    # bootlog_evaluate reads the policy name from the verifier configuration.
    real_get = config.get

    def get(section, option, *args, **kwargs):
        if (section, option) == ("verifier", "measured_boot_policy_name"):
            return case["policy"]
        return real_get(section, option, *args, **kwargs)

    elchecker.config.get = get
    try:
        # Keylime's example policy writes into the refstate; give it a fresh copy.
        failure = elchecker.bootlog_evaluate(case["refstate"], json.loads(json.dumps(data)), set(case["pcrs"]), "oracle")
    except Exception as exc:
        return {"failures": [], "parse_failures": parse_failures, "error": repr(exc)}
    finally:
        elchecker.config.get = real_get
    events = [
        {"event_id": e.event_id, "context": json.loads(e.context), "recoverable": e.recoverable}
        for e in failure.events
    ]
    return {"failures": events, "parse_failures": parse_failures, "error": None}


def main():
    text = open(sys.argv[1], encoding="utf-8").read() if len(sys.argv) > 1 else sys.stdin.read()
    results = [create(c) if c["op"] == "create" else evaluate(c) for c in json.loads(text)]
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
