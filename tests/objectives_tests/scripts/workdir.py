"""Test script for parallel trials: leaves a file in its folder, waits, and checks it.

Prints the value of --x read back from its own folder, so that a collision between trials
(two trials in one folder) shows as a wrong value. Appends "device start end" to the file
named by DEVICE_LOG, so that a test can check that no device ran two trials at once.
"""

import argparse
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--x", type=float, required=True)
args = parser.parse_args()

start = time.time()
with open("mine.txt", "w") as f:
    f.write(repr(args.x))
time.sleep(0.3)
with open("mine.txt") as f:
    seen = float(f.read())
others = sorted(set(os.listdir(".")) - {"mine.txt", "data.txt", "workdir.py"})
log = os.environ.get("DEVICE_LOG")
if log:
    with open(log, "a") as f:
        f.write(f"{os.environ.get('CUDA_VISIBLE_DEVICES')} {start} {time.time()}\n")
print(f"others: {others}")
print(f"value: {seen}")
