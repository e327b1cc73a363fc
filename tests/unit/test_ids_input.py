from __future__ import annotations

from pathlib import Path

from orchestrator.cli.ids_input import collect_ids


def test_an_ids_file_from_windows_with_a_bom_and_crlf_gives_every_id(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"\xef\xbb\xbfbatch_one\r\nbatch_two \r\n# a comment\r\n\r\nbatch_three\r\n")
    got = collect_ids([], str(ids))
    assert got.valid == ["batch_one", "batch_two", "batch_three"]
    assert got.rejected == []
