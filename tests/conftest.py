import sys
from pathlib import Path

# Make tests/chat_doubles.py importable from every test folder.
sys.path.insert(0, str(Path(__file__).parent))
