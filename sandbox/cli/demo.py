"""Demo setup (filled in with the demo data generator)."""

COMMANDS: list[object] = []
