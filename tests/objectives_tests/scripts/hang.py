"""Test script: starts a child, writes both process ids to pids.txt, and hangs forever.

With --ignore-term both ignore SIGTERM, so only SIGKILL stops them.
"""

import os
import signal
import subprocess
import sys
import time

ignore = "--ignore-term" in sys.argv
if ignore:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child_code = (
    "import signal, time\n"
    + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore else "")
    + "time.sleep(3600)\n"
)
child = subprocess.Popen([sys.executable, "-c", child_code])
with open("pids.txt", "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
print("started; hanging", flush=True)
while True:
    time.sleep(1)
