"""Text that can cross every boundary: JSON may carry lone surrogates (``"\\ud800"``),
which Python strings hold but no UTF-8 store, log or answer can, and NUL characters
(``"\\u0000"``), which PostgreSQL text columns refuse. Every edge refuses both with
this check, so they never reach a store or an audit entry (where one bad string in a
group-commit batch would fail the whole batch)."""

from __future__ import annotations

from typing import Any


def is_utf8(text: str) -> bool:
    """True unless ``text`` holds lone surrogates or NUL characters."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable(text: str) -> str:
    """``text`` with lone surrogates and NUL characters replaced by U+FFFD."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode()


def all_utf8(value: Any) -> bool:
    """True if every string in a JSON value (keys included) is clean UTF-8."""
    if isinstance(value, str):
        return is_utf8(value)
    if isinstance(value, dict):
        return all(is_utf8(str(k)) and all_utf8(v) for k, v in value.items())
    if isinstance(value, list):
        return all(all_utf8(v) for v in value)
    return True


def nests_deeper(value: Any, limit: int) -> bool:
    """True if a JSON value has objects or arrays nested more than ``limit`` deep
    (walked without recursion: the point is to refuse what recursion cannot handle)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
