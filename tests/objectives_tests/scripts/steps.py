"""Test script: prints an intermediate loss per step, slowly, then the final loss.

Writes its process id to pid.txt so that a test can check it was stopped when pruned.
Usage: steps.py --lr LR [--steps N] [--sleep S]
"""

import argparse
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--sleep", type=float, default=0.05)
args = parser.parse_args()

with open(os.path.join(os.getcwd(), "pid.txt"), "w") as f:
    f.write(str(os.getpid()))
loss = 4.0
for step in range(args.steps):
    loss = loss * (1.0 - min(args.lr, 0.9)) + 0.1
    print(f"step {step} | loss: {loss:.4f}", flush=True)
    time.sleep(args.sleep)
print(f"final_loss: {loss:.6f}")
