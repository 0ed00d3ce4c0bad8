#!/usr/bin/env python3
"""The Keylime side of Vigil's quote differential test.

Runs Keylime's own `keylime.tpm.tpm_util.checkquote` — what its verifier calls on every
quote — on a batch of generated quotes and prints its verdicts. Run it with the Python
of the venv made by scripts/keylime-reference.sh.

Input (stdin): {"keys": [PEM, ...], "cases": [{"key": INDEX, "nonce": TEXT,
  "attest": B64, "sig": B64, "pcrs": B64, "hash": "sha256"|...}, ...]}
Output (stdout): a JSON list, one per case: {"ok": bool, "class": CLASS, "error": TEXT}
where CLASS names the check that refused the quote (null when accepted):
  signature, scheme, hash_alg, nonce, pcr_digest, malformed, or other.
"""
import base64
import json
import logging
import struct
import sys

from cryptography.exceptions import InvalidSignature

from keylime.tpm import tpm_util

logging.disable(logging.CRITICAL)

# Keylime's messages, by the check that raises them.
CLASSES = [
    ("Unsupported quote signature algorithm", "scheme"),
    ("ECDSA signature algorithm requires", "scheme"),
    ("Quote was expected to use", "hash_alg"),
    ("Unsupported hash with id", "hash_alg"),
    ("The nonce from the attestation differs", "nonce"),
    ("The digest used for quoting is different", "pcr_digest"),
    ("Bad magic in tpms_attest", "malformed"),
    ("Unsupported type in tpms_attest", "malformed"),
    ("size_of_select must be", "malformed"),
    ("Failed to parse the entire pcrblob", "malformed"),
    ("pcr_values list is too short", "malformed"),
    ("Did not consume all entries", "malformed"),
    # r or s longer than the curve allows: the signature does not fit the key.
    ("coordinate size", "signature"),
    ("Unable to parse ECC signature", "malformed"),
]


def classify(exc):
    if isinstance(exc, InvalidSignature):
        return "signature"
    if isinstance(exc, struct.error):
        return "malformed"
    text = str(exc)
    for needle, cls in CLASSES:
        if needle in text:
            return cls
    return "other"


def run(keys, case):
    try:
        tpm_util.checkquote(
            keys[case["key"]],
            case["nonce"],
            base64.b64decode(case["sig"]),
            base64.b64decode(case["attest"]),
            base64.b64decode(case["pcrs"]),
            case["hash"],
        )
        return {"ok": True, "class": None, "error": None}
    except Exception as e:  # pylint: disable=broad-except
        return {"ok": False, "class": classify(e), "error": repr(e)}


def main():
    doc = json.load(sys.stdin)
    keys = [k.encode() for k in doc["keys"]]
    json.dump([run(keys, c) for c in doc["cases"]], sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
