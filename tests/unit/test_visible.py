"""`visible`: every character a terminal would act on is spelled out, nothing else is."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from orchestrator.core.visible import UNSAFE, visible

ACTED_ON = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})  # controls, format, surrogates, separators


def test_every_control_format_separator_and_surrogate_is_caught() -> None:
    missed = [
        f"U+{point:04X}"
        for point in range(sys.maxunicode + 1)
        if unicodedata.category(chr(point)) in ACTED_ON and not UNSAFE.fullmatch(chr(point))
    ]
    assert missed == []


def test_nothing_a_person_reads_is_touched() -> None:
    # Beyond the categories above, only code points still unassigned in this Python's
    # Unicode (format characters a later version added) may be caught.
    touched = [
        f"U+{point:04X}"
        for point in range(sys.maxunicode + 1)
        if UNSAFE.fullmatch(chr(point))
        and unicodedata.category(chr(point)) not in ACTED_ON | {"Cn"}
    ]
    assert touched == []
    text = "batch_abc: HTTP 429 [rate] «ça va» 日本語 👍🏽 tab-less \\x1b as typed"
    assert visible(text) == text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J\x1b]0;owned\x07", "\\x1b[2J\\x1b]0;owned\\x07"),  # CSI, OSC, BEL
        ("\x9b31m", "\\x9b31m"),  # C1 CSI
        ("a\r\nb\tc\x7f", "a\\r\\nb\\tc\\x7f"),  # overwrite, forged line, DEL
        ("abc\u202eevil\u2066", "abc\\u202eevil\\u2066"),  # bidi override and isolate
        ("a\u200bb\ufeff", "a\\u200bb\\ufeff"),  # zero width, BOM
        ("\udcff", "\\udcff"),  # a byte that was not UTF-8, which cannot be printed
        ("tag\U000e0041", "tag\\U000e0041"),
    ],
)
def test_examples(raw: str, shown: str) -> None:
    assert visible(raw) == shown
    visible(raw).encode("ascii")  # what was spelled out is plain ASCII
