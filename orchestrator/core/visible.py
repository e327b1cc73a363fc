"""Text from outside, made safe to show on a terminal or in a text log. Pure.

Anything the server, a result file or another system wrote (error messages,
status text, request ids, metadata, ids listed by `sync`) can hold characters
that a terminal acts on instead of showing: ESC and CSI start escape sequences
(colours, cursor moves, window titles, OSC 8 links), CR and backspace overwrite
what was printed, a newline forges a log line, bidi overrides and zero-width
characters make text read as something else. `visible` spells every such
character out as a Python-style escape (`\\x1b`, `\\u202e`), so the operator
sees that it was there and what it was, and the terminal does nothing with it.

What counts: every character of Unicode's categories Cc (C0, DEL, C1), Cf
(format: bidi controls, zero-width characters, the BOM, tags), Zl and Zp (line
and paragraph separators) and Cs (lone surrogates, which cannot even be
written as UTF-8). `tests/unit/test_visible.py` checks the class below against
the categories of every code point. A backslash is left as it is: text that
already reads `\\x1b` is shown as it reads, and cannot act on the terminal.
"""

from __future__ import annotations

import re

__all__ = ["UNSAFE", "visible"]

UNSAFE = re.compile(
    "["
    "\x00-\x1f\x7f-\x9f"  # C0, DEL, C1
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f"  # zero width, bidi, separators
    "\ud800-\udfff"  # lone surrogates (argv and environment bytes that are not UTF-8)
    "\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"  # tags
    "]"
)
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _spelled(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    point = ord(char)
    if point < 0x100:
        return f"\\x{point:02x}"
    if point < 0x10000:
        return f"\\u{point:04x}"
    return f"\\U{point:08x}"


def visible(text: str) -> str:
    """`text` with every control, format, separator and surrogate character spelled out."""
    if text.isprintable():  # none of them (each is unprintable): one C scan, not the regex's
        return text
    return UNSAFE.sub(_spelled, text)
