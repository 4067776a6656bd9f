"""What a recipient's mail program would see in saved messages, as JSON.

Usage: mail_facts.py OUT FILE.eml...

Parses each raw message with Python's `email` package (an independent parser) and
prints one JSON list, one object per message:

- `bare_lf`, `bare_cr`: line ends other than CRLF in the raw bytes, anywhere;
- `longest_line`: the longest line of the raw bytes, without its CRLF;
- `header_ascii`: whether the raw header section is 7-bit (non-ASCII text is RFC 2047 /
  RFC 2231 encoded), and `raw_headers`: Subject, From and each Content-Disposition as
  sent, undecoded;
- `subject`, `from_name`, `from_address`, `to`: decoded;
- `defects`: what the parser found wrong, for the message and every part;
- `text`: the text/plain body as bytes decoded from its transfer encoding (latin-1 into
  JSON so CR and LF survive), and `text_charset`;
- `attachments`: for each, the decoded `filename`, `content_type`,
  `transfer_encoding`, and `saved`: the path under OUT where its decoded bytes were
  written, as a recipient saving it would get them.
"""

import email
import email.policy
import json
import os
import re
import sys


def facts(path, out):
    raw = open(path, "rb").read()
    head = raw.split(b"\r\n\r\n", 1)[0]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    found = {
        "file": os.path.basename(path),
        "bare_lf": len(re.findall(rb"(?<!\r)\n", raw)),
        "bare_cr": len(re.findall(rb"\r(?!\n)", raw)),
        "longest_line": max(len(line) for line in raw.split(b"\r\n")),
        "header_ascii": all(b < 128 for b in head),
        "raw_headers": {
            "subject": raw_header(head, b"Subject"),
            "from": raw_header(head, b"From"),
            "content_disposition": re.findall(
                rb"(?im)^content-disposition:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", raw
            ),
        },
        "subject": str(message["subject"]),
        "from_name": message["from"].addresses[0].display_name,
        "from_address": message["from"].addresses[0].addr_spec,
        "to": [a.addr_spec for a in message["to"].addresses],
        "defects": [],
        "text": None,
        "text_charset": None,
        "attachments": [],
    }
    found["raw_headers"]["content_disposition"] = [
        h.decode("ascii", "replace") for h in found["raw_headers"]["content_disposition"]
    ]
    for index, part in enumerate(message.walk()):
        found["defects"].extend(f"part {index}: {d!r}" for d in part.defects)
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if part.get_content_disposition() == "attachment":
            saved = os.path.join(out, f"{found['file']}.{index}")
            with open(saved, "wb") as f:
                f.write(payload)
            found["attachments"].append(
                {
                    "filename": part.get_filename(),
                    "content_type": part.get_content_type(),
                    "transfer_encoding": part.get("Content-Transfer-Encoding"),
                    "saved": saved,
                }
            )
        elif part.get_content_type() == "text/plain" and found["text"] is None:
            found["text"] = payload.decode("latin-1")
            found["text_charset"] = part.get_content_charset()
    return found


def raw_header(head, name):
    """The header `name` as sent, folded lines joined with their CRLF kept."""
    match = re.search(rb"(?im)^" + name + rb":([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head)
    return match.group(1).decode("ascii", "replace").strip() if match else None


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: mail_facts.py OUT FILE.eml...")
    out = sys.argv[1]
    print(json.dumps([facts(path, out) for path in sys.argv[2:]], indent=1))
