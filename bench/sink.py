"""The loopback SMTP sink in its own process, keeping messages in memory only.

    python -m bench.sink   # prints "ready PORT", runs until its standard input closes

The benchmark runs the server in another process so that the sender and the server do not
share one interpreter lock, as in production; ``retention smtp-sink`` would also write
every message to disk, which is not what the delivery rate should measure.
"""

from __future__ import annotations

import sys

from retention.smtp_sink import MailSink


def main() -> int:
    with MailSink() as sink:
        print(f"ready {sink.port}", flush=True)
        sys.stdin.read()  # until the parent closes the pipe
        print(f"received {len(sink.received)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
