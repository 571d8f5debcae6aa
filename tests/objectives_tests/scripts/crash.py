"""Test script: fails in the ways a training run fails, chosen by --mode.

ok: prints the metric; raise: a traceback and exit code 1; exit3: exit code 3 after a message;
nan: prints a NaN metric; text: prints a metric that is not a number; none: prints no metric;
segv: killed by a signal; secret: fails printing an API key.
"""

import argparse
import os
import signal
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--mode", required=True)
parser.add_argument("--x", type=float, default=0.5)
args = parser.parse_args()

print("training ...")
if args.mode == "raise":
    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
if args.mode == "exit3":
    print("loss exploded", file=sys.stderr)
    sys.exit(3)
if args.mode == "segv":
    os.kill(os.getpid(), signal.SIGKILL)
if args.mode == "secret":
    fake_key = "sk-" + "abcdefghijklmnop1234"  # built at run time: no key-like literal in the repo
    print(f"using key {fake_key} for the endpoint", file=sys.stderr)
    sys.exit(2)
if args.mode == "nan":
    print("val_bpb: nan")
elif args.mode == "text":
    print("val_bpb: diverged")
elif args.mode == "ok":
    print(f"val_bpb: {args.x * 2:.6f}")
