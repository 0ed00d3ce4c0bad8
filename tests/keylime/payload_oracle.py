"""Keylime's side of the payload/revocation differential test (crates/vigil-core/tests/
payload_keylime.rs). Reads one JSON request on stdin, answers with Keylime's own
functions (keylime.crypto, the verifier's revocation signing) on stdout."""
import base64
import json
import sys

from keylime import crypto

req = json.load(sys.stdin)
key = bytes.fromhex(req["key_hex"])
nk_priv = crypto.rsa_import_privkey(req["nk_private_pem"])
out = {
    # Keylime encrypts a payload and a share; Vigil must open them.
    "payload_by_keylime": crypto.encrypt(req["plaintext"].encode(), key).decode(),
    "share_by_keylime": base64.b64encode(
        crypto.rsa_encrypt(crypto.rsa_import_pubkey(req["nk_public_pem"]), key)
    ).decode(),
    "auth_tag": crypto.do_hmac(key, req["agent_id"]),
    "challenge_answer": crypto.do_hmac(key, req["challenge"]),
    # Keylime opens what Vigil made.
    "payload_by_vigil": crypto.decrypt(req["payload_by_vigil"].encode(), key).decode(),
    "share_by_vigil": crypto.rsa_decrypt(
        nk_priv, base64.b64decode(req["share_by_vigil"])
    ).hex(),
    # Revocation notices both ways.
    "notice_signature_by_keylime": crypto.rsa_sign(nk_priv, req["notice_msg"].encode()).decode(),
    "vigil_notice_verifies": crypto.rsa_verify(
        crypto.get_public_key(nk_priv),
        req["vigil_notice"]["msg"].encode(),
        req["vigil_notice"]["signature"].encode(),
    ),
}
json.dump(out, sys.stdout)
