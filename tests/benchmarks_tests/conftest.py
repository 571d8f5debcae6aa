from __future__ import annotations

import sys
from pathlib import Path

# The benchmark scripts import each other as top-level modules (python benchmarks/NAME.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
