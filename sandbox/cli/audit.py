"""Audit commands."""

COMMANDS: list[object] = []
