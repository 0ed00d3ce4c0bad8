#!/usr/bin/env python3
"""Differential cases for Vigil's IMA replay, answered by Keylime itself.

Builds deterministic measurement-list cases (real log lines, Keylime's test vectors,
odd-but-legal lines, random mutations) and runs each through Keylime's
keylime.ima.ima.process_measurement_list, recording the running PCR, the event ids
and contexts, and the incremental state. Two kinds:

  single:       one batch, fresh state, every bank, optional quoted PCR (taken from
                Keylime at a random prefix, or bogus);
  incremental:  a sequence of polls of a growing log with a lagging quote, wrong
                start entries, corrupted lines and bogus PCRs, state carried along.

Usage (in a venv with keylime==7.14.3 and its runtime deps):
  python tests/keylime/ima_replay_cases.py --seed 1 --out /tmp/ima-diff.json
  VIGIL_IMA_DIFF=/tmp/ima-diff.json cargo test -p vigil-core --test ima_keylime_diff -- --ignored

Keylime runs without a config file here, where ignore_tomtou_errors falls back to
true; the Rust side sets the same. A runtime policy excluding everything keeps
validation out of the picture while still letting log_hash_alg vary.
"""
import argparse
import copy
import json
import logging
import os
import random
import sys

logging.disable(logging.CRITICAL)
from keylime.agentstates import AgentAttestState  # noqa: E402
from keylime.common.algorithms import Hash  # noqa: E402
from keylime.ima import ima  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.join(HERE, "..", "..", "..", "shared", "testdata")
REAL_LOG = os.path.join(TESTDATA, "rust-keylime/keylime-agent/test-data/ima/ascii_runtime_measurements")

# Keylime's test/test_ima_ast.py vectors and lines probing parser corners.
EXTRA = [
    "10 1e70a3e1af66f42826ad63b761b4cb9c4df195e1 ima-sig sha256:d33d5d13792292e202dbf69a6f1b07bc8a02f01424db8489ba7bb7d43c0290ef /usr/bin/dd 030204f3452d2301009dd340c852f37e35748363586939d4199b6684be27e7c1236ca1528f708372ed9cd52a0d991f66448790f5616ed5bd7f9bbd22193b1e3e54f6bf29a1497945a34d1b418b24f4cbeaef897bf3cebca27065ebb8761b46bc2662fe76f141245b9186a5ac8493c7f4976cf0d6dfc085c3e503e3f771bc3ccb121230db76fd8aba4f45f060ad64ab3afd99b4e52824b9eba12e93e46f9dcb2fa01d9cef89f298a0da02a82a4fb56924afd3e3c277a1302d99f770d488449df2d43eb5b174a0a528827e6877b965c2f0b7c89cf1aa26a7417a892df4c2294e2872d62748b72ea04ecb0689b5d792e615a9bf9d56f6e0f298560bf9441df0a22729c5f23389f028c25f",
    "10 5426cf3031a43f5bfca183d79950698a95a728f6 ima-sig sha256:f1125b940480d20ad841d26d5ea253edc0704b5ec1548c891edf212cb1a9365e /lib/modules/5.4.48-openpower1/kernel/drivers/usb/common/usb-common.ko ",
    "10 b7862dbbf1383ac6c7cca7f02d981a081aacb1f1 ima-buf sha1:6e0e6fc8a188ef4f059638949adca4d221946906 device_resume 6e616d653d544553543b757569643d43525950542d5645524954592d39656633326535623635623034343234613561386562343436636630653731332d544553543b63617061636974793d303b6d616a6f723d3235333b6d696e6f723d303b6d696e6f725f636f756e743d313b6e756d5f746172676574733d313b6163746976655f7461626c655f686173683d346565383065333365353635643336333430356634303238393436653837623365396563306335383661666639656630656436663561653762656237326431333b",
    "10 d7026dc672344d3ee372217bdbc7395947788671 ima 6f66d1d8e2fffcc12dfcb78c04b81fe5b8bbae4e /usr/bin/kmod",
    "10 0000000000000000000000000000000000000000 ima-ng sha256:" + "00" * 32 + " /tmp/x",
    "10 " + "ff" * 20 + " ima-ng sha256:00 /tmp/y",
    "11 7936eb315fb4e74b99e7d461bc5c96049e1ee092 ima-ng sha1:bc026ae66d81713e4e852465e980784dc96651f8 /usr/lib/systemd/systemd",
    "10 7936EB315FB4E74B99E7D461BC5C96049E1EE092 ima-ng sha1:BC026AE66D81713E4E852465E980784DC96651F8 /usr/lib/systemd/systemd",
    "10 7936eb315fb4e74b99e7d461bc5c96049e1ee092\tx ima-ng sha1:bc02 /a",
    "10 00 ima-modsig sha256:00 /x 00",
    "10  ima-ng sha1:00 /x",
    "10 00 ima-ng \u00e9:01 /x",
    "10 00 ima-ng sha256:01\t02 /x y z",
    "10 00 ima-sig sha256:00 /x 0302 04",
    "10 00 ima-buf sha256:00 /x ab cd",
    "10 00 ima-buf sha256:00 /x ",
    "10 00 ima-ng :00 /x",
    "10 00 ima " + "00" * 16 + " /x",
    "10 00 ima sha256:" + "00" * 32 + " /x",
    "10 00 ima-ng " + "00" * 20 + " /x",
    "010 00 ima-ng sha1:00 /x",
    "10 00 ima-ng sha1:00 ",
    "10 00 ima-ng sha1:00 /x\r",
    "\r",
    " ",
    "10 00 ima-ng a:b:c /x",
]
ALPHABET = "0123456789abcdefABCDEF :\t\r-_/xzgima"
BANKS = ["sha1", "sha256", "sha384", "sha512", "sm3_256"]


def policy(log_alg):
    p = copy.deepcopy(ima.EMPTY_RUNTIME_POLICY)
    p["excludes"] = [".*"]
    p["ima"]["log_hash_alg"] = log_alg
    return p


def mutate(rng, line):
    chars = list(line)
    for _ in range(rng.randint(1, 3)):
        if not chars:
            chars = ["1"]
        i = rng.randrange(len(chars))
        op = rng.randint(0, 3)
        if op == 0:
            chars[i] = rng.choice(ALPHABET)
        elif op == 1:
            del chars[i]
        elif op == 2:
            chars.insert(i, rng.choice(ALPHABET))
        else:
            chars = chars[:i]
    return "".join(chars)


def run(state, text, bank, log_alg, pcrval):
    try:
        running, failure = ima.process_measurement_list(
            state, text.split("\n"), policy(log_alg), pcrval=pcrval, hash_alg=Hash(bank)
        )
    except Exception as e:  # Keylime raises on a few inputs; recorded, Vigil differs there
        return {"exception": repr(e)}
    events = [[e.event_id, json.loads(e.context)] for e in failure.events]
    return {"running": running, "events": events}


def single_cases(rng, real):
    base = real[:60] + EXTRA
    cases = []
    prefix_cache = {}

    def prefix_pcr(lines, k, bank):
        key = ("\n".join(lines[:k]), bank)
        if key not in prefix_cache:
            prefix_cache[key] = run(None, key[0], bank, "sha1", None).get("running")
        return prefix_cache[key]

    for bank in BANKS:
        for log_alg in ["sha1", "sha256"]:
            cases.append(("\n".join(base), bank, log_alg, None))
    for line in base:
        cases.append((line, "sha256", "sha1", None))
    for _ in range(400):
        lines = [mutate(rng, x) if rng.random() < 0.6 else x for x in rng.sample(base, 4)]
        cases.append(("\n".join(lines), rng.choice(BANKS), rng.choice(["sha1", "sha1", "sha256"]), None))
    for _ in range(300):
        start = rng.randrange(50)
        lines = [mutate(rng, x) if rng.random() < 0.05 else x for x in real[start : start + 8]]
        for _ in range(rng.randint(0, 2)):
            lines.insert(rng.randrange(len(lines) + 1), "")
        bank = rng.choice(["sha1", "sha256", "sha384"])
        k = rng.randint(-1, len(lines))
        pcr = "ab" * (Hash(bank).get_size() // 8) if k < 0 else prefix_pcr(lines, k, bank)
        cases.append(("\n".join(lines) + rng.choice(["", "\n"]), bank, "sha1", pcr))
    out = []
    for text, bank, log_alg, pcr in cases:
        state = AgentAttestState("diff")
        res = run(state, text, bank, log_alg, pcr)
        res["next"] = state.next_ima_ml_entry
        out.append({"text": text, "bank": bank, "log_alg": log_alg, "pcrval": pcr, "keylime": res})
    return out


def incremental_scenario(rng, real):
    bank = rng.choice(["sha1", "sha256"])
    prefix = {}

    def pcr_at(q):
        if q not in prefix:
            prefix[q] = run(None, "\n".join(real[:q]), bank, "sha1", None)["running"]
        return prefix[q]

    state = AgentAttestState("diff")
    steps = []
    avail = quoted = 0
    for _ in range(40):
        avail = min(len(real), avail + rng.randint(0, 60))
        quoted = rng.randint(quoted, avail)
        start = state.next_ima_ml_entry
        r = rng.random()
        if r < 0.05:
            start = 0
        elif r < 0.10:
            start += rng.randint(1, 5)
        lines = real[start:avail]
        pcr = pcr_at(quoted)
        if rng.random() < 0.05:
            pcr = "ab" * (len(pcr) // 2)
        if lines and rng.random() < 0.05:
            i = rng.randrange(len(lines))
            lines = lines[:i] + ["garbage line"] + lines[i:]
        text = "\n".join(lines) + ("\n" if lines and rng.random() < 0.5 else "")
        # What Keylime's quote processing does with the start entry before the IMA check.
        events = []
        if start == 0:
            state.reset_ima_attestation()
        elif start != state.next_ima_ml_entry:
            events.append(["qoute_validation.invalid_ima_entry_nb", None])
        res = run(state, text, bank, "sha1", pcr)
        res["events"] = events + res.get("events", [])
        res["next"] = state.next_ima_ml_entry
        qp = state.quote_progress
        res["quote_progress"] = list(qp) if qp else None
        steps.append({"start": start, "text": text, "pcrval": pcr, "keylime": res})
    return {"bank": bank, "steps": steps}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scenarios", type=int, default=8)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with open(REAL_LOG, encoding="utf-8") as f:
        real = f.read().split("\n")[:-1]
    doc = {
        "single": single_cases(rng, real),
        "incremental": [incremental_scenario(rng, real) for _ in range(a.scenarios)],
    }
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    print(f"{len(doc['single'])} single cases, {len(doc['incremental'])} scenarios -> {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
