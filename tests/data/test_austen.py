"""lamina.data.austen on tiny synthetic novels: no apt, no network (one opt-in test uses apt)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from lamina.data import austen
from lamina.data.builtin import cache_dir
from lamina.errors import LaminaError

LINES = {
    n.name: [n.title.upper(), "", "By Jane Austen", "", "", "CHAPTER I", "",
             f"The first paragraph of {n.title},", "which runs over two lines.", "",
             "\"Yes.\"", "", f"A second paragraph of {n.title}, long enough.", "", "THE END"]
    for n in austen.NOVELS
}


def texts() -> dict[str, str]:
    return {name: "\n".join(lines) for name, lines in LINES.items()}


# ------------------------------------------------------------------------------------ paragraphs
def test_novels_are_the_six_in_the_fixed_order() -> None:
    assert austen.NAMES == ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey",
                            "persuasion")
    assert [n.title for n in austen.NOVELS][:2] == ["Sense and Sensibility", "Pride and Prejudice"]


def test_paragraphs_join_lines_and_drop_headings_titles_and_short_ones() -> None:
    got = austen.paragraphs(texts())
    assert len(got) == 2 * 6
    assert got[0] == (0, "The first paragraph of Sense and Sensibility, which runs over two lines.")
    assert got[1] == (0, "A second paragraph of Sense and Sensibility, long enough.")
    assert [i for i, _ in got] == [i for i in range(6) for _ in range(2)]  # reading order, novel by novel


@pytest.mark.parametrize("para", ["CHAPTER XIV", "Chapter 12", "VOLUME II", "chapter iv.", "SENSE AND SENSIBILITY",
                                  "\"WILLIAM COLLINS, ESQUIRE\"", "Finis", "(1811)", "By Jane Austen"])
def test_paragraph_rules_drop(para: str) -> None:
    assert austen.paragraphs({"emma": f"{para}\n\nShe was the youngest of the two daughters."}) == [
        (3, "She was the youngest of the two daughters.")]


def test_paragraphs_keep_a_long_line_that_starts_like_a_heading_and_honour_min_chars() -> None:
    text = "Chapter and verse were quoted at length.\n\n\"Oh! dear, no, never.\"\n  \n\nAbc def ghi."
    assert [p for _, p in austen.paragraphs({"persuasion": text})] == [
        "Chapter and verse were quoted at length.", "\"Oh! dear, no, never.\""]
    assert len(austen.paragraphs({"persuasion": text}, min_chars=5)) == 3


def test_paragraphs_reject_unknown_novels() -> None:
    with pytest.raises(LaminaError, match="unknown novel 'lady-susan'"):
        austen.paragraphs({"lady-susan": "text"})


# ----------------------------------------------------------------------------------- block split
def test_block_split_keeps_every_block_on_one_side_and_covers_everything() -> None:
    counts = [230, 0, 51, 120, 7, 400]
    train, test = austen.block_split(counts, test_fraction=0.2, block=50, seed=3)
    assert train.dtype == test.dtype == torch.long
    assert torch.equal(torch.sort(torch.cat([train, test])).values, torch.arange(sum(counts)))
    assert torch.all(train[1:] > train[:-1]) and torch.all(test[1:] > test[:-1])
    side = torch.zeros(sum(counts), dtype=torch.long)
    side[test] = 1
    start = 0
    for n in counts:
        for b in range(0, n, 50):  # blocks restart at each novel's first item
            assert side[start + b : start + min(b + 50, n)].unique().numel() == 1
        n_blocks = -(-n // 50)
        got = int(side[start : start + n].sum())
        if n_blocks >= 2:
            assert 0 < got < n  # each novel with two blocks or more is in both
        else:
            assert got == 0
        start += n


def test_block_split_is_deterministic_in_the_seed() -> None:
    a = austen.block_split([1000, 800], seed=7)
    b = austen.block_split([1000, 800], seed=7)
    c = austen.block_split([1000, 800], seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[1], c[1])
    assert len(a[1]) == 4 * 50 + 3 * 50  # round(0.2 * 20) and round(0.2 * 16) blocks


@pytest.mark.parametrize("kw", [{"test_fraction": 1.0}, {"test_fraction": -0.1}, {"block": 0}])
def test_block_split_rejects_bad_arguments(kw: dict) -> None:
    with pytest.raises(LaminaError, match="block_split"):
        austen.block_split([10, 10], **kw)


# ------------------------------------------------------------------------------- read and cache
def test_read_austen_says_how_to_fetch_when_absent() -> None:
    assert austen.austen_dir() is None
    with pytest.raises(LaminaError, match="lamina data fetch austen") as e:
        austen.read_austen()
    assert "\n" not in str(e.value)
    assert austen.austen_status().startswith("not fetched")


def test_cache_round_trip_and_checksum(tmp_path: Path) -> None:
    dest = cache_dir() / "austen"
    (dest / "stale").mkdir(parents=True)  # an incomplete earlier attempt is replaced
    manifest = austen.write_novels(LINES, "synthetic", dest)
    assert not (dest / "stale").exists()
    assert austen.austen_dir() == dest
    got = austen.read_austen()
    assert list(got) == list(austen.NAMES) and got == texts()
    on_disk = json.loads((dest / "manifest.json").read_text())
    assert on_disk == manifest and manifest["source"] == "synthetic"
    assert manifest["characters"] == sum(len(t) for t in texts().values())
    emma = manifest["novels"]["emma"]
    assert emma["sha256"] == hashlib.sha256((dest / "emma.txt").read_bytes()).hexdigest()
    assert emma["lines"] == len(LINES["emma"])
    assert not list(dest.parent.glob(".austen.*"))  # no temporary folder left behind
    assert austen.fetch_austen().startswith("austen is already available")  # nothing is downloaded
    (dest / "emma.txt").write_text("tampered")
    with pytest.raises(LaminaError, match="SHA-256"):
        austen.read_austen()


def test_lamina_data_comes_first_and_needs_no_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    austen.write_novels(LINES, "synthetic", cache_dir() / "austen")
    mine = tmp_path / "mine" / "austen"
    mine.mkdir(parents=True)
    for name in austen.NAMES:
        (mine / f"{name}.txt").write_bytes(f"{name} line one\r\n\r\nline two".encode())
    monkeypatch.setenv("LAMINA_DATA", str(tmp_path / "mine"))
    assert austen.austen_dir() == mine
    assert austen.read_austen()["emma"] == "emma line one\n\nline two"
    (mine / "emma.txt").unlink()
    assert austen.austen_dir() == cache_dir() / "austen"  # incomplete: the next place is used
    with pytest.raises(LaminaError, match=r"lacks emma\.txt"):
        austen.read_austen(mine)


# -------------------------------------------------------------------------------------- fetching
def write_rdata(folder: Path, lines: dict[str, list[str]]) -> None:
    """A janeaustenr-style lazy-load database: Rdata.rdx indexes zlib records in Rdata.rdb."""
    rdata = pytest.importorskip("rdata")
    folder.mkdir(parents=True)
    blob, index = b"", {}
    for name, ls in lines.items():
        rdata.write_rds(folder / "obj.rds", np.array(ls), compression=None)
        raw = (folder / "obj.rds").read_bytes()
        record = struct.pack(">I", len(raw)) + zlib.compress(raw)
        index[name] = np.array([len(blob), len(record)], dtype=np.int32)
        blob += record
    (folder / "obj.rds").unlink()
    (folder / "Rdata.rdb").write_bytes(blob)
    rdata.write_rds(folder / "Rdata.rdx", {"variables": index, "references": {}, "compressed": np.array([True])})


def test_read_rdata_reads_a_lazy_load_database(tmp_path: Path) -> None:
    lines = {**LINES, "emma": [*LINES["emma"], "It cost \u00a35."]}
    write_rdata(tmp_path / "data", lines)
    assert austen.read_rdata(tmp_path / "data") == lines


def test_read_rdata_reports_a_damaged_database(tmp_path: Path) -> None:
    write_rdata(tmp_path / "data", LINES)
    rdb = tmp_path / "data" / "Rdata.rdb"
    rdb.write_bytes(rdb.read_bytes()[:-10])
    with pytest.raises(LaminaError, match="could not read the novels"):
        austen.read_rdata(tmp_path / "data")


def test_apt_route_refreshes_the_package_lists_once(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rdata")
    calls = []

    def fake_run(cmd: list[str], cwd: Path) -> str | None:
        calls.append(cmd[:2])
        if cmd[:2] == ["apt-get", "download"]:
            if calls.count(["apt-get", "update"]) == 0:
                return "E: Unable to locate package r-cran-janeaustenr"
            (cwd / "r-cran-janeaustenr_1.0.0-1_all.deb").write_bytes(b"!<arch>")
        elif cmd[0] == "dpkg-deb":
            write_rdata(Path(cmd[3]) / austen.RDATA_DIR, LINES)
        return None

    monkeypatch.setattr(austen.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(austen, "_run", fake_run)
    report = austen.fetch_austen()
    assert calls == [["apt-get", "download"], ["apt-get", "update"], ["apt-get", "download"], ["dpkg-deb", "-x"]]
    assert "r-cran-janeaustenr 1.0.0-1" in report
    assert austen.read_austen() == texts()


def test_fetch_without_apt_refuses_unpinned_gutenberg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(austen.shutil, "which", lambda tool: None)
    with pytest.raises(LaminaError) as e:
        austen.fetch_austen()
    msg = str(e.value)
    assert "\n" not in msg
    assert "needs apt-get and dpkg-deb" in msg and "no SHA-256 is pinned" in msg and "LAMINA_DATA" in msg
    assert not (cache_dir() / "austen").exists()


def gutenberg_file(title: str) -> bytes:
    body = f"\r\n\r\n{title}\r\n\r\nIt is a truth universally acknowledged.\r\n\r\n"
    return ("\ufeffThe Project Gutenberg eBook of " + title + "\r\n*** START OF THE PROJECT GUTENBERG EBOOK "
            + title.upper() + " ***" + body + "*** END OF THE PROJECT GUTENBERG EBOOK ***\r\nlicence\r\n").encode()


def test_gutenberg_route_with_pinned_digests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pins = {}
    for n in austen.NOVELS:
        data = gutenberg_file(n.title)
        (tmp_path / f"pg{n.gutenberg}.txt").write_bytes(data)
        pins[n.name] = hashlib.sha256(data).hexdigest()
    monkeypatch.setattr(austen.shutil, "which", lambda tool: None)
    monkeypatch.setattr(austen, "GUTENBERG_URL", f"file://{tmp_path}/pg{{n}}.txt")
    monkeypatch.setattr(austen, "GUTENBERG", pins)
    assert "Project Gutenberg" in austen.fetch_austen()
    assert austen.read_austen()["emma"] == "Emma\n\nIt is a truth universally acknowledged."
    shutil.rmtree(cache_dir() / "austen")
    monkeypatch.setitem(pins, "emma", "0" * 64)  # a wrong digest is an error, not a skipped check
    with pytest.raises(LaminaError, match="checksum mismatch"):
        austen.fetch_austen()


def test_gutenberg_body_needs_the_markers() -> None:
    with pytest.raises(LaminaError, match="START/END markers"):
        austen.gutenberg_body("just some text\n")


@pytest.mark.skipif(os.environ.get("LAMINA_TEST_APT") != "1" or not (shutil.which("apt-get") and shutil.which("dpkg-deb")),
                    reason="set LAMINA_TEST_APT=1 on a machine with apt-get and dpkg-deb")
def test_real_fetch_from_debian() -> None:
    pytest.importorskip("rdata")
    assert "r-cran-janeaustenr" in austen.fetch_austen()
    t = austen.read_austen()
    every = "".join(t.values())
    assert 4_000_000 < len(every) < 4_050_000 and len(set(every)) == 81  # janeaustenr 1.0.0: 4,025,022
    assert {c for c in every if ord(c) > 127} == {"\u00a3"}
    assert len(austen.paragraphs(t)) > 9000
