"""Keylime 7.14.3's tenant request bodies, for Vigil's tenant differential test.

Reads one JSON request on stdin, answers one JSON object on stdout. Each body is made
by Keylime's own code (Tenant.do_cvadd, do_add_runtime_policy, do_add_mb_policy and
cli.policies.process_policy); only the HTTP client is replaced, by one that records
the body it is given and stops there.

Request: {"policy": {process_policy args}, "enrol": {tenant fields}}
Answer:  {"enrol": <body text>, "runtime_push": <body text>|null, "mb_push": <body text>|null}
"""

import base64
import json
import sys

from keylime import tenant as kt
from keylime.cli import policies
from keylime.mba import mba


class Captured(Exception):
    pass


class Recorder:
    bodies = []

    def __init__(self, *args, **kwargs):
        pass

    def post(self, path, data=None, **kwargs):
        Recorder.bodies.append((path, data))
        raise Captured()

    put = post


def policy_args(p):
    args = {
        "tpm_policy": None,
        "mask": None,
        "ima_sign_verification_keys": [],
        "allowlist": None,
        "allowlist_name": None,
        "ima_exclude": None,
        "runtime_policy": None,
        "runtime_policy_name": None,
        "runtime_policy_sig_key": None,
        "runtime_policy_checksum": None,
        "mb_policy": None,
        "mb_policy_name": None,
    }
    args.update(p)
    return args


def capture(fn, *a):
    Recorder.bodies = []
    try:
        fn(*a)
    except Captured:
        pass
    path, body = Recorder.bodies[0]
    return {"path": path, "body": body}


def main():
    req = json.load(sys.stdin)
    mba.load_imports(skip_custom_policies=True)
    kt.RequestsClient = Recorder
    t = kt.Tenant.__new__(kt.Tenant)
    t.verifier_api_version = "2.6"
    t.tls_context = None
    t.request_timeout = 1
    t.agent_uuid = req["enrol"]["agent_uuid"]
    t.verifier_id = None
    out = {}

    (
        t.tpm_policy,
        t.mb_policy,
        t.mb_policy_name,
        t.runtime_policy_name,
        t.ima_sign_verification_keys,
        t.runtime_policy,
        t.runtime_policy_key,
    ) = policies.process_policy(policy_args(req["policy"]))
    e = req["enrol"]
    t.V = base64.b64decode(e["v"]) if e["v"] else b""
    t.cv_cloudagent_ip = e["cloudagent_ip"]
    t.agent_port = e["cloudagent_port"]
    t.verifier_ip = e["verifier_ip"]
    t.verifier_port = e["verifier_port"]
    t.metadata = json.loads(e["metadata"])
    t.revocation_key = e["revocation_key"]
    t.accept_tpm_hash_algs = e["accept_tpm_hash_algs"]
    t.accept_tpm_encryption_algs = e["accept_tpm_encryption_algs"]
    t.accept_tpm_signing_algs = e["accept_tpm_signing_algs"]
    t.registrar_data = {"aik_tpm": e["ak_tpm"], "mtls_cert": e["mtls_cert"]}
    t.agent_api_version = e["supported_version"]
    out["enrol"] = capture(t.do_cvadd)

    p = req["policy"]
    out["runtime_push"] = None
    if p.get("runtime_policy_name") and (p.get("runtime_policy") or p.get("allowlist")):
        out["runtime_push"] = capture(t.do_add_runtime_policy, policy_args(p))
    out["mb_push"] = None
    if p.get("mb_policy_name") and p.get("mb_policy"):
        out["mb_push"] = capture(t.do_add_mb_policy, policy_args(p))
    sys.stdout.write("\n" + json.dumps(out) + "\n")


main()
