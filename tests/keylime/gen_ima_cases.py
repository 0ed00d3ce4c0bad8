#!/usr/bin/env python3
"""Seeded generator of IMA measurement lists with planted faults, for differential tests
of Vigil against Keylime (tests/keylime/ima_oracle.py). Standard library only.

Each case is a directory with `log`, `policy.json` and `case.json`; `cases.json` in the
output directory lists them all in the oracle's input format.

  gen_ima_cases.py --out DIR [--seed N] [--count N]

Faults (several may be planted in one case): a file missing from the policy, a wrong
file digest, an altered template-hash column, an excluded path, a ToMToU (all-zero
template hash) entry, a quoted PCR from a prefix of the log (log ahead of the quote),
a wrong quoted PCR, a PCR column other than 10, an unknown template, a garbage line.
Templates: ima (256-byte padded names), ima-ng, ima-sig with an empty signature,
ima-buf; banks sha1/sha256; template-hash algorithms sha1/sha256; file digests
sha1/sha256/sha512.
"""
import argparse
import hashlib
import json
import os
import random
import struct

EXCLUDES = ["/tmp/.*", r".*\.pyc$", "/var/log/", r"/proc/[0-9]+/"]
DIRS = ["/usr/bin", "/usr/lib/x86_64-linux-gnu", "/etc", "/opt/app+tools/lib", "/usr/sbin"]
FAULTS = ["unknown_file", "wrong_hash", "template_hash", "excluded", "tomtou", "log_ahead",
          "wrong_pcr", "pcr_column", "unknown_template", "garbage", "no_pcr"]


def u32(n):
    return struct.pack("<I", n)


def d_ng(alg, digest):
    a = alg.encode()
    return u32(len(a) + 2 + len(digest)) + a + b":\0" + digest


def n_ng(name):
    n = name.encode()
    return u32(len(n) + 1) + n + b"\0"


class Log:
    def __init__(self, bank, log_alg):
        self.bank, self.log_alg = bank, log_alg
        self.pcr = b"\0" * hashlib.new(bank).digest_size
        self.lines, self.prefix_pcrs = [], [self.pcr]

    def add(self, template, fields, data, pcr_col="10", violation=False, bad_hash=False):
        if violation:
            th = "0" * (2 * hashlib.new(self.log_alg).digest_size)
            ext = b"\xff" * hashlib.new(self.bank).digest_size
        else:
            th = hashlib.new(self.log_alg, data).hexdigest()
            if bad_hash:
                th = ("1" if th[0] != "1" else "2") + th[1:]
            ext = hashlib.new(self.bank, data).digest()
        self.pcr = hashlib.new(self.bank, self.pcr + ext).digest()
        self.lines.append("%s %s %s %s" % (pcr_col, th, template, fields))
        self.prefix_pcrs.append(self.pcr)

    def raw(self, line):
        # Keylime does not extend lines it cannot parse.
        self.lines.append(line)
        self.prefix_pcrs.append(self.pcr)


def make_case(rng, idx, out):
    bank = rng.choice(["sha1", "sha256"])
    log_alg = rng.choice(["sha1", "sha1", "sha256"])
    faults = set(rng.sample(FAULTS, rng.choice([0, 1, 1, 2, 3])))
    log = Log(bank, log_alg)
    digests = {}
    n = rng.randint(3, 30)
    fault_at = {f: rng.randint(1, n - 1) for f in faults}

    boot = hashlib.sha256(b"boot %d" % idx).digest()
    log.add("ima-ng", "sha256:%s boot_aggregate" % boot.hex(), d_ng("sha256", boot) + n_ng("boot_aggregate"))
    digests["boot_aggregate"] = [boot.hex()]

    for i in range(1, n):
        here = {f for f, at in fault_at.items() if at == i}
        if "unknown_template" in here:
            log.raw("10 %s ima-modsig sha256:%s /usr/bin/modsigned " % ("ab" * 20, "cd" * 32))
            continue
        if "garbage" in here:
            log.raw(rng.choice(["10 nothex ima-ng sha256:00 /x", "garbage", "10 " + "a" * 40 + " ima-ng"]))
            continue
        path = "%s/f%d_%d%s" % (rng.choice(DIRS), idx, i, rng.choice(["", ".so", ".py"]))
        if "excluded" in here:
            path = rng.choice(["/tmp/build-%d" % i, "/usr/lib/py/mod%d.pyc" % i, "/var/log/app%d" % i])
        template = rng.choice(["ima", "ima-ng", "ima-ng", "ima-sig", "ima-buf"])
        alg = "sha1" if template == "ima" else rng.choice(["sha1", "sha256", "sha512"])
        content = b"content %d %d" % (idx, i)
        digest = hashlib.new(alg, content).digest()
        if template == "ima":
            data = digest + path.encode() + b"\0" * (256 - len(path.encode()))
            fields = "%s %s" % (digest.hex(), path)
        elif template == "ima-ng":
            data = d_ng(alg, digest) + n_ng(path)
            fields = "%s:%s %s" % (alg, digest.hex(), path)
        elif template == "ima-sig":
            data = d_ng(alg, digest) + n_ng(path) + u32(0)
            fields = "%s:%s %s " % (alg, digest.hex(), path)
        else:
            path = "buffer-%d" % i
            buf = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 24)))
            digest = hashlib.new(alg, buf).digest()
            data = d_ng(alg, digest) + n_ng(path) + u32(len(buf)) + buf
            fields = "%s:%s %s %s" % (alg, digest.hex(), path, buf.hex())
        section = "ima-buf" if template == "ima-buf" else "digests"
        if "unknown_file" not in here and "excluded" not in here:
            allowed = digest.hex()
            if "wrong_hash" in here:
                allowed = hashlib.new(alg, b"other").hexdigest()
            digests.setdefault(section, {}).setdefault(path, []).append(allowed) if section == "ima-buf" \
                else digests.setdefault(path, []).append(allowed)
        log.add(template, fields, data,
                pcr_col="11" if "pcr_column" in here else "10",
                violation="tomtou" in here,
                bad_hash="template_hash" in here)

    ima_buf = digests.pop("ima-buf", {})
    policy = {
        "meta": {"version": 1, "generator": 3},
        "release": 0,
        "digests": digests,
        "excludes": rng.sample(EXCLUDES, rng.randint(0, len(EXCLUDES))) if "excluded" not in faults else EXCLUDES,
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": log_alg, "dm_policy": None},
        "ima-buf": ima_buf,
        "verification-keys": "",
    }
    if "no_pcr" in faults:
        pcr = None
    elif "wrong_pcr" in faults:
        pcr = hashlib.new(bank, b"wrong %d" % idx).hexdigest()
    elif "log_ahead" in faults:
        pcr = log.prefix_pcrs[rng.randint(0, len(log.prefix_pcrs) - 1)].hex()
    else:
        pcr = log.pcr.hex()

    d = os.path.join(out, "case-%04d" % idx)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "log"), "w") as f:
        f.write("\n".join(log.lines) + "\n")
    with open(os.path.join(d, "policy.json"), "w") as f:
        json.dump(policy, f, indent=1)
    case = {"log": os.path.join(d, "log"), "policy": os.path.join(d, "policy.json"), "bank": bank,
            "pcr": pcr, "faults": sorted(faults)}
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(case, f, indent=1)
    return case


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--count", type=int, default=500)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    cases = [make_case(rng, i, args.out) for i in range(args.count)]
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(cases, f)


if __name__ == "__main__":
    main()
