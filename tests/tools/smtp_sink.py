"""An SMTP server for the end-to-end tests: aiosmtpd on 127.0.0.1, a free port.

Usage: smtp_sink.py DIR

Prints `port N` on stdout once it listens, then saves each message's DATA exactly as it
arrived (after SMTP dot-unstuffing, before any parsing) to DIR/NNNN.eml, with
DIR/NNNN.json beside it: the envelope (`mail_from`, `rcpt_tos`, `mail_options`) and the
reply it gave. Like Postfix with `smtpd_forbid_bare_newline = reject`, it refuses a
message that holds a bare LF (or a bare CR) with 550, after saving it.

It runs until it is killed or its stdin closes.
"""

import asyncio
import json
import os
import re
import sys

from aiosmtpd.smtp import SMTP

BARE_LINE_END = re.compile(rb"(?<!\r)\n|\r(?!\n)")


class Sink:
    def __init__(self, folder):
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content
        if BARE_LINE_END.search(raw):
            reply = "550 5.5.2 Error: bare <LF> received"
        else:
            reply = "250 2.0.0 Ok: queued"
        self.count += 1
        stem = os.path.join(self.folder, f"{self.count:04}")
        facts = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "mail_options": envelope.mail_options,
            "reply": reply,
        }
        # The .json last, each renamed into place: a reader that sees it sees both whole.
        for path, data in ((stem + ".eml", raw), (stem + ".json", json.dumps(facts).encode())):
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)
        return reply


async def main(folder):
    loop = asyncio.get_running_loop()
    sink = Sink(folder)
    server = await loop.create_server(
        lambda: SMTP(sink, hostname="sink.test", enable_SMTPUTF8=True),
        host="127.0.0.1",
        port=0,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"port {port}", flush=True)
    # Stop when the test that started us goes away (its end of our stdin closes).
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: smtp_sink.py DIR")
    asyncio.run(main(sys.argv[1]))
