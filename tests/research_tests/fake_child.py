"""A stand-in for the guarded child that sends whatever bytes a test scripts: the hostile child.

It speaks the start-up handshake, then answers ``load`` with the script's ``load`` bytes and each
``call`` with the next entry of ``calls``. The script is the JSON the test passes as the
mechanism's source: ``{"load": HEX | null, "calls": [HEX, ...], "exit_after": [bool, ...]}``;
each HEX is sent as is (a frame with its own length prefix, or a truncated one), and an entry
whose ``exit_after`` is true exits right after writing (a child dying mid-message).
"""

import json
import os
import struct
import sys


def read_frame(stream):
    header = stream.read(4)
    if len(header) < 4:
        sys.exit(0)
    (size,) = struct.unpack(">I", header)
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return json.loads(data)


def frame(message):
    data = json.dumps(message).encode()
    return struct.pack(">I", len(data)) + data


def main():
    stream_in, out = sys.stdin.buffer, sys.stdout.buffer
    read_frame(stream_in)  # the settings
    out.write(frame({"ok": True, "pid": os.getpid(), "ready": True}))
    out.flush()
    script = None
    calls = 0
    while True:
        message = read_frame(stream_in)
        if message.get("op") == "load":
            script = json.loads(message["source"])
            raw, exit_after = script.get("load"), script.get("load_exit", False)
        else:
            entries = script["calls"]
            raw = entries[min(calls, len(entries) - 1)]
            exits = script.get("exit_after", [])
            exit_after = exits[min(calls, len(exits) - 1)] if exits else False
            calls += 1
        if raw == "close":  # close the reply pipe and live on
            os.close(1)
            sys.stdout = None
            import time

            time.sleep(60)
        if raw is None:
            raw = frame(
                {
                    "ok": True,
                    "name": "fake",
                    "version": "1",
                    "class_name": "Fake",
                    "doc": "",
                    "hooks": script.get("hooks", ["prepare"]),
                    "space": script.get("space", {}),
                }
            ).hex()
        out.write(bytes.fromhex(raw))
        out.flush()
        if exit_after:
            os._exit(3)


if __name__ == "__main__":
    main()
