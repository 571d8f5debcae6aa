"""Level 2: mechanism research. A language model writes new mechanisms; the gate checks them and
they only ever run behind a process boundary."""
