"""Writes hash_vectors.json: FarmHash Fingerprint64 and SipHash-2-4 values computed by independent
reference implementations (Google's FarmHash C++ through pyfarmhash 0.5.1, and the C SipHash of
siphash24 1.9), for tests/test_hashing.py. Not run by the tests; run it by hand in a scratch venv:

    python -m venv /tmp/hv && /tmp/hv/bin/pip install pyfarmhash siphash24
    /tmp/hv/bin/python tests/data/make_hash_vectors.py
"""
import json
import os
import random

import farmhash
import siphash24

rng = random.Random(2026)
values = [b""] + [bytes(rng.randrange(256) for _ in range(n)) for n in range(1, 200)]
values += [bytes(rng.randrange(256) for _ in range(n)) for n in (255, 256, 257, 511, 1000, 4097)]
values += ["héllo wörld ✓".encode(), "日本語のテキスト".encode() * 5, b"A", b"hello world"]
values = [v for v in values if not v.endswith(b"\0")] + [b"x\0y"]   # numpy string arrays drop trailing NULs
keys = [(0, 0), (133, 137), (133, 133), (0xFFFFFFFFFFFFFFFF, 0x0123456789ABCDEF)]


def sip(data, key):
    k = key[0].to_bytes(8, "little") + key[1].to_bytes(8, "little")
    return int.from_bytes(siphash24.siphash24(data, key=k).digest(), "little")


out = {"source": "pyfarmhash 0.5.1 (farmhash.fingerprint64), siphash24 1.9 (siphash24.siphash24)",
       "values_hex": [v.hex() for v in values],
       "fingerprint64": [str(farmhash.fingerprint64(v)) for v in values],
       "siphash24": {f"{k0},{k1}": [str(sip(v, (k0, k1))) for v in values] for k0, k1 in keys}}
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hash_vectors.json"), "w") as f:
    json.dump(out, f, indent=0)
