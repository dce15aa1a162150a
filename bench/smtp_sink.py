"""An SMTP sink for bench/mail_burst.py: aiosmtpd on 127.0.0.1:<port> in its own process,
accepting every message and appending its ``Message-ID`` to <file> (one line each,
flushed), so the bench can count what was handed to SMTP and what came twice.

    .venv/bin/python bench/smtp_sink.py PORT FILE
"""

from __future__ import annotations

import signal
import sys
import threading
from email.parser import BytesHeaderParser

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, path: str):
        self.out = open(path, "a", buffering=1)
        self.parser = BytesHeaderParser()
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        message_id = self.parser.parsebytes(envelope.original_content).get("Message-ID", "?")
        with self.lock:
            self.out.write(f"{message_id}\n")
        return "250 OK"


def main() -> int:
    port, path = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Sink(path), hostname="127.0.0.1", port=port)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"smtp sink on 127.0.0.1:{port}", flush=True)
    stop.wait()
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
