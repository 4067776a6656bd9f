"""DKIM verification of saved messages by an independent verifier (dkimpy), as JSON.

Usage: dkim_facts.py RECORDS.json FILE.eml...

RECORDS.json maps DNS names to TXT values, e.g.
`{"crier._domainkey.acme.example": "v=DKIM1; k=rsa; p=..."}`: dkimpy's DNS lookup is
answered from it (its `dnsfunc`), so nothing leaves the machine. Prints one JSON list,
one object per message:

- `verified`: what `dkim.verify` says of the message (Ed25519 needs PyNaCl);
- `signature`: the tags of its DKIM-Signature (`a`, `c`, `d`, `s`, `h` split on `:`);
- `lookups`: the names dkimpy asked for;
- `list_unsubscribe`, `list_unsubscribe_post`: those headers, unfolded.
"""

import email
import email.policy
import json
import sys

import dkim


def facts(path, records):
    raw = open(path, "rb").read()
    lookups = []

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        name = name.rstrip(".")
        lookups.append(name)
        value = records.get(name)
        return value.encode() if value is not None else None

    verified = bool(dkim.verify(raw, dnsfunc=dnsfunc))
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    signature = {}
    header = message.get("DKIM-Signature")
    if header is not None:
        for tag in "".join(str(header).split()).split(";"):
            if "=" in tag:
                key, value = tag.split("=", 1)
                signature[key] = value
        if "h" in signature:
            signature["h"] = signature["h"].split(":")
        signature.pop("b", None)
    unfold = lambda v: None if v is None else " ".join(str(v).split())
    return {
        "file": path,
        "verified": verified,
        "signature": signature,
        "lookups": lookups,
        "list_unsubscribe": unfold(message.get("List-Unsubscribe")),
        "list_unsubscribe_post": unfold(message.get("List-Unsubscribe-Post")),
    }


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: dkim_facts.py RECORDS.json FILE.eml...")
    records = json.load(open(sys.argv[1]))
    print(json.dumps([facts(path, records) for path in sys.argv[2:]], indent=1))
