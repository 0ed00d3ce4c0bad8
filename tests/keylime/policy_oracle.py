#!/usr/bin/env python3
"""The Keylime side of Vigil's policy signing and acceptance tests.

Calls Keylime's own code, as its verifier and tools do. Run it with the Python of the
venv made by scripts/keylime-reference.sh.

Input (stdin): a JSON list of requests; output (stdout): a JSON list, one answer each.
  {"op": "verify", "envelope": PATH, "key": PATH or null}
      Keylime's DSSE check (`keylime.signing.verify_dsse_envelope`: with a key, the EC
      public key; without, the certificates in the `keyid`s, as the verifier does), then
      what the verifier runs on a runtime-policy upload with
      `require_allow_list_signatures = True` (`ima.verify_runtime_policy`, then
      `ima.runtime_policy_db_contents`, which validates the schema).
      -> {"dsse": bool, "accepted": bool, "error": TEXT or null}
  {"op": "require", "policy": PATH, "key": PATH or null}
      Only the verifier's upload checks with `require_allow_list_signatures = True`,
      with the key Keylime's verifier would hand them (its
      `signing.get_runtime_policy_keys` finds one only for an envelope).
      -> {"accepted": bool, "error": TEXT or null}
  {"op": "accept", "policy": PATH}
      What the verifier runs on a runtime-policy upload with signatures not required
      (the default): `ima.verify_runtime_policy(..., verify_sig=False)` and
      `ima.runtime_policy_db_contents`.  -> {"accepted": bool, "error": TEXT or null}
  {"op": "pubkey", "private": PATH}
      The PEM public key of a PEM private key or certificate.  -> {"pem": TEXT}
  {"op": "genkey", "curve": "secp384r1"|..., "out": PATH}
      A new EC private key, written as Keylime writes its keys (SEC1 PEM).  -> {}
  {"op": "convert", "allowlist": PATH, "excludelist": PATH or null,
   "verification_keys": [PATH, ...], "out": PATH}
      `keylime_convert_runtime_policy -a ... -e ... -v ... -o ...`, in-process.
      -> {"ok": bool, "error": TEXT or null}
"""
import contextlib
import json
import logging
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keylime import signing
from keylime.cmd import convert_runtime_policy
from keylime.ima import ima

logging.disable(logging.CRITICAL)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def verifier_accepts(policy, key, verify_sig):
    try:
        ima.verify_runtime_policy(policy, key, verify_sig=verify_sig)
        ima.runtime_policy_db_contents("oracle", policy.decode())
        return {"accepted": True, "error": None}
    except ima.ImaValidationError as e:
        return {"accepted": False, "error": f"{e.code}: {e.message}"}
    except Exception as e:  # pylint: disable=broad-except
        return {"accepted": False, "error": repr(e)}


def run(req):
    op = req["op"]
    if op == "verify":
        envelope = read(req["envelope"])
        key = read(req["key"]) if req.get("key") else None
        try:
            dsse = signing.verify_dsse_envelope(envelope, key) is not None
        except Exception as e:  # pylint: disable=broad-except
            return {"dsse": False, "accepted": False, "error": repr(e)}
        out = verifier_accepts(envelope, key, True)
        out["dsse"] = dsse
        return out
    if op == "require":
        key = read(req["key"]) if req.get("key") else None
        return verifier_accepts(read(req["policy"]), key, True)
    if op == "accept":
        return verifier_accepts(read(req["policy"]), None, False)
    if op == "pubkey":
        data = read(req["private"])
        if b"CERTIFICATE" in data:
            public = x509.load_pem_x509_certificate(data).public_key()
        else:
            public = serialization.load_pem_private_key(data, None).public_key()
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {"pem": pem.decode()}
    if op == "genkey":
        key = ec.generate_private_key(getattr(ec, req["curve"].upper())())
        with open(req["out"], "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption(),
                )
            )
        return {}
    if op == "convert":
        try:
            # The converter prints progress on stdout, which carries the answers here.
            with contextlib.redirect_stdout(sys.stderr):
                policy = convert_runtime_policy.convert_legacy_allowlist(req["allowlist"])
                policy = convert_runtime_policy.update_runtime_policy(
                    policy,
                    excludelist_path=req.get("excludelist"),
                    verification_keys=req.get("verification_keys") or [],
                )
            with open(req["out"], "w", encoding="utf-8") as f:
                f.write(json.dumps(policy))
            return {"ok": True, "error": None}
        except Exception as e:  # pylint: disable=broad-except
            return {"ok": False, "error": repr(e)}
    raise ValueError(f"unknown op {op}")


def main():
    requests = json.load(sys.stdin)
    json.dump([run(r) for r in requests], sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
