"""FASTA sequences: the reader, alphabets, labels, encodings, reverse complements, the codec, and
end-to-end training on tiny synthetic files written into tmp_path."""

from __future__ import annotations

import gzip
import random
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lamina.config import DataConfig
from lamina.data.fasta import (
    ReverseComplement,
    SequenceCodec,
    check_letters,
    codec_from_dict,
    detect_alphabet,
    encode_ids,
    kmer_counts,
    kmer_rc_permutation,
    lineage,
    load_fasta,
    merge_rare,
    read_fasta,
    record_labels,
    reverse_complement,
)
from lamina.errors import LaminaError
from lamina.models.sequence import ALPHABETS

DNA = ALPHABETS["dna"]
LINEAGE = "Bacteria; {phylum}; {cls}; Order; Family; Genus"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def rc_string(s: str) -> str:
    pairs = dict(zip("ACGTNRYSWKMBDHV", "TGCANYRSWMKVHDB", strict=True))
    return "".join(pairs[c] for c in reversed(s))


# -- reader ----------------------------------------------------------------------------------------


def test_reads_multiline_lower_case_gaps_digits_and_gzip(tmp_path: Path) -> None:
    text = ">r1 first\nacgt\nAC-GT..\n  10 ggcc 20\n>r2\tBacteria; X\nNNAC\n"
    plain = read_fasta(write(tmp_path / "a.fasta", text))
    gz = tmp_path / "a.fasta.gz"
    with gzip.open(gz, "wt") as f:
        f.write(text)
    for records in (plain, read_fasta(gz)):
        assert [r.id for r in records] == ["r1", "r2"]
        assert records[0].sequence == "ACGTACGTGGCC"
        assert records[0].header == "r1 first"
        assert records[1].sequence == "NNAC"


def test_ambiguity_letters_are_counted_in_the_notes(tmp_path: Path) -> None:
    path = write(tmp_path / "a.fa", "".join(f">s{i}\tB; P{i % 2}\nACGTRYN{'ACGT' * 6}\n" for i in range(8)))
    amb = check_letters(read_fasta(path), DNA)
    assert amb == {"R": 8, "Y": 8, "N": 8}
    ds = load_fasta(path, DataConfig(min_class_examples=0))
    assert any("24 ambiguity letters" in n and "R 8" in n for n in ds.notes)


@pytest.mark.parametrize(
    "text,match",
    [
        (">a\nACGT\n>b\nACQT\n", r"record 'b' has 'Q' at residue 3.*not a dna letter"),
        (">a\nACGT\n>b\n\n>c\nAC\n", r"record 'b' has no sequence"),
        (">a\nACGT\n>a\nACGT\n", r"record id 'a' appears twice"),
        ("", r"holds no FASTA records"),
        ("ACGT\nACGT\n", r"is not FASTA: line 1"),
        (">a\nAC#GT\n", r"record 'a' holds '#' at residue 3"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path / "bad.fasta", text)
    with pytest.raises(LaminaError, match=match) as e:
        records = read_fasta(path)
        check_letters(records, DNA, str(path))
    assert "\n" not in str(e.value)


def test_unreadable_gzip_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "x.fa.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(LaminaError, match="not a readable gzip"):
        read_fasta(path)


def test_alphabet_detection(tmp_path: Path) -> None:
    dna = read_fasta(write(tmp_path / "d.fa", ">a\nACGTACGTNNACGT\n"))
    rna = read_fasta(write(tmp_path / "r.fa", ">a\nACGUACGUACGU\n"))
    prot = read_fasta(write(tmp_path / "p.fa", ">a\nMKVLAAGIVEQW*\n"))
    assert detect_alphabet(dna)[0].name == "dna"
    assert detect_alphabet(rna)[0].name == "rna"
    assert detect_alphabet(prot)[0].name == "protein"
    assert prot[0].sequence.endswith("W")  # the stop was dropped
    with pytest.raises(LaminaError, match=r"'U' at residue 4.*data.alphabet=rna"):
        check_letters(rna, DNA)


# -- labels ------------------------------------------------------------------------------------------


def _labelled(tmp_path: Path) -> Path:
    rows = [("s1", "Firmicutes", "Bacilli"), ("s2", "Firmicutes", "Clostridia"), ("s3", "Proteobacteria", "Alpha")]
    text = "".join(f">{i} strain_{p[:3]} desc\t{LINEAGE.format(phylum=p, cls=c)}\nACGTACGT\n" for i, p, c in rows)
    return write(tmp_path / "l.fasta", text + ">s4 no lineage\nACGT\n")


def test_labels_from_lineage_rank_regex_and_csv(tmp_path: Path) -> None:
    records = read_fasta(_labelled(tmp_path))
    assert record_labels(records, "", "phylum")[0] == ["Firmicutes", "Firmicutes", "Proteobacteria", None]
    assert record_labels(records, "", "class")[0] == ["Bacilli", "Clostridia", "Alpha", None]
    assert record_labels(records, "", "2")[0][:3] == ["Bacilli", "Clostridia", "Alpha"]
    assert record_labels(records, "header:strain_(\\w+)", "")[0] == ["Fir", "Fir", "Pro", None]
    assert record_labels(records, "header:desc", "")[0] == ["desc", "desc", "desc", None]
    csv = write(tmp_path / "labels.csv", "id,label\ns1,a\ns2,b\ns3,a\ns4,b\n")
    assert record_labels(records, str(csv), "")[0] == ["a", "b", "a", "b"]
    with pytest.raises(LaminaError, match=r"unknown data.rank 'kingdom'"):
        record_labels(records, "", "kingdom")


def test_csv_missing_ids_are_listed(tmp_path: Path) -> None:
    records = read_fasta(_labelled(tmp_path))
    csv = write(tmp_path / "labels.csv", "s1,a\ns2,b\n")
    with pytest.raises(LaminaError, match=r"no label for 2 of the 4 records \(s3, s4\)"):
        record_labels(records, str(csv), "")


def test_unlabelled_records_are_dropped_with_a_note(tmp_path: Path) -> None:
    ds = load_fasta(_labelled(tmp_path), DataConfig(min_class_examples=0))
    assert len(ds.train) == 3 and ds.classes == ["Firmicutes", "Proteobacteria"]
    assert any("1 records without a label dropped: s4" in n for n in ds.notes)


def test_rare_classes_merge_into_other() -> None:
    labels = ["a"] * 5 + ["b"] * 2 + ["c"]
    merged, notes = merge_rare(labels, 3)
    assert merged == ["a"] * 5 + ["other"] * 3
    assert "2 classes with fewer than 3" in notes[0] and "b (2), c (1)" in notes[0]
    assert merge_rare(labels, 0) == (labels, [])


# -- encodings -------------------------------------------------------------------------------------


def test_ids_are_padded_and_cut() -> None:
    x, cut = encode_ids(["ACGT", "NR", "ACGTACGT"], DNA, 6)
    assert cut == 1
    assert x.tolist() == [[1, 2, 3, 4, 0, 0], [5, 6, 0, 0, 0, 0], [1, 2, 3, 4, 1, 2]]
    assert x.dtype == torch.int64


def test_soft_one_hot_of_ambiguity_letters() -> None:
    table = DNA.soft_onehot()
    ids = encode_ids(["ARN"], DNA, 3)[0][0]
    assert table[ids].tolist() == [[1, 0, 0, 0], [0.5, 0, 0.5, 0], [0.25] * 4]
    assert table[0].tolist() == [0, 0, 0, 0]


def test_kmer_counts_match_a_direct_count() -> None:
    rng = random.Random(0)
    seqs = ["".join(rng.choice("ACGT") for _ in range(rng.randint(5, 60))) for _ in range(6)] + ["ACGNNACGT"]
    for k in (1, 2, 3):
        x = kmer_counts(seqs, DNA, k)
        assert x.shape == (len(seqs), 4**k)
        for row, s in zip(x, seqs, strict=True):
            words = Counter(s[i : i + k] for i in range(len(s) - k + 1) if "N" not in s[i : i + k])
            total = sum(words.values())
            for w, n in words.items():
                idx = sum("ACGT".index(c) * 4 ** (k - 1 - j) for j, c in enumerate(w))
                assert row[idx].item() == pytest.approx(n / total)
            assert row.sum().item() == pytest.approx(1.0)


def test_too_many_kmer_columns_is_an_error() -> None:
    with pytest.raises(LaminaError, match=r"data.kmer=8 gives 65,536 columns.*data.kmer <= 7"):
        kmer_counts(["ACGT"], DNA, 8)
    with pytest.raises(LaminaError, match=r"data.kmer <= 3"):
        kmer_counts(["MKV"], ALPHABETS["protein"], 4)


def test_reverse_complement_twice_is_the_identity_and_matches_strings() -> None:
    seqs = ["ACGTRYKMBDHVN", "AACG", "GATTACA"]
    x, _ = encode_ids(seqs, DNA, 16)
    comp = DNA.complement_ids()
    rc = reverse_complement(x, comp)
    assert torch.equal(reverse_complement(rc, comp), x)
    assert torch.equal(rc, encode_ids([rc_string(s) for s in seqs], DNA, 16)[0])
    assert (rc[:, 13:] == 0).all()  # padding stays at the end


def test_kmer_permutation_equals_counting_the_reverse_complement() -> None:
    rng = random.Random(1)
    seqs = ["".join(rng.choice("ACGT") for _ in range(40)) for _ in range(5)]
    for k in (1, 2, 3, 4):
        perm = kmer_rc_permutation(DNA, k)
        assert torch.equal(perm[perm], torch.arange(4**k))
        assert torch.equal(kmer_counts(seqs, DNA, k)[:, perm], kmer_counts([rc_string(s) for s in seqs], DNA, k))


def test_augment_flips_about_half_and_keeps_the_rest() -> None:
    x, _ = encode_ids(["ACGTTT"] * 200, DNA, 8)
    out = ReverseComplement("dna")(x, torch.Generator().manual_seed(0))
    flipped = (out != x).any(dim=1)
    assert 60 < int(flipped.sum()) < 140
    assert torch.equal(out[flipped][0], encode_ids(["AAACGT"], DNA, 8)[0][0])


# -- codec and dataset --------------------------------------------------------------------------------


def _motif_fasta(path: Path, n: int = 120, seed: int = 0, length: int = 80, copies: int = 1) -> Path:
    """Three classes, each a random background holding ``copies`` of its own 8-bp motif."""
    rng = random.Random(seed)
    motifs = {"Alpha": "GGGGCCCC", "Beta": "ATATATAT", "Gamma": "CAGTCAGT"}
    lines = []
    for i in range(n):
        name = list(motifs)[i % 3]
        size = rng.randint(length // 2, length)
        seq = [rng.choice("ACGT") for _ in range(size)]
        for _ in range(copies):
            at = rng.randint(0, size - 8)
            seq[at : at + 8] = motifs[name]
        lines.append(f">seq{i} synthetic\t{LINEAGE.format(phylum=name, cls=name)}\n{''.join(seq).lower()}\n")
    path.write_text("".join(lines))
    return path


def test_dataset_contract(tmp_path: Path) -> None:
    auto = load_fasta(_motif_fasta(tmp_path / "m.fasta", n=30), DataConfig())  # data.kmer=-1: 6-mers for DNA
    assert auto.train.x.shape == (30, 4**6) and auto.default_model == "mlp" and auto.codec.kmer == 6
    ds = load_fasta(tmp_path / "m.fasta", DataConfig(kmer=0))
    assert ds.modality == "sequence" and ds.task == "classify" and ds.classes == ["Alpha", "Beta", "Gamma"]
    assert ds.train.x.dtype == torch.int64 and ds.train.x.shape == (30, max(len(r.sequence) for r in read_fasta(tmp_path / "m.fasta")))
    assert ds.preprocess.kind == "tokens" and ds.default_model == "seqresnet"
    assert ds.model_kwargs == {"vocab": DNA.vocab, "alphabet": "dna"}
    assert ds.augment is not None and ds.augment.active
    assert "30 DNA sequences, 3 classes, lengths" in ds.summary
    km = load_fasta(tmp_path / "m.fasta", DataConfig(kmer=3, reverse_complement=False))
    assert km.train.x.shape == (30, 64) and km.train.x.dtype == torch.float32
    assert km.preprocess.kind == "array" and km.default_model == "mlp" and km.augment is None


def test_codec_round_trip_reads_files_and_strings(tmp_path: Path) -> None:
    path = _motif_fasta(tmp_path / "m.fasta", n=9)
    for kmer in (0, 3):
        ds = load_fasta(path, replace(DataConfig(), kmer=kmer))
        codec = codec_from_dict(ds.codec.to_dict())
        assert isinstance(codec, SequenceCodec) and codec.to_dict() == ds.codec.to_dict()
        x, names = codec.read(str(path))
        assert names == [f"seq{i}" for i in range(9)]
        assert torch.equal(x, ds.train.x)
        seqs = [r.sequence for r in read_fasta(path)][:2]
        x2, names2 = codec.read(seqs)
        assert names2 == ["[0]", "[1]"] and torch.equal(x2, ds.train.x[:2])
    with pytest.raises(LaminaError, match="'Q' at residue 2"):
        codec.read(["AQGT"])


# -- end to end -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kmer", [0, 4])
def test_train_and_predict_end_to_end(tmp_path: Path, kmer: int) -> None:
    import lamina

    path = _motif_fasta(tmp_path / "motifs.fasta", n=300, copies=4)
    overrides = [f"data.kmer={kmer}", "data.batch_size=32", "train.epochs=8", "model.width=16" if kmer == 0 else
                 "model.width=64", "train.optimizer=adamw", "train.lr=0.01"]  # fmt: skip
    run = lamina.train(str(path), out=str(tmp_path / "run"), quiet=True, overrides=overrides)
    assert run.summary["test_accuracy"] >= 0.85  # chance: 1/3
    predictor = lamina.load(tmp_path / "run")
    predicted = predictor.predict(str(path))
    truth = [lineage(r.header)[1] for r in read_fasta(path)]
    assert len(predicted) == 300
    assert sum(p == t for p, t in zip(predicted, truth, strict=True)) / 300 >= 0.85
    assert torch.equal(predictor.read(str(path))[0], load_fasta(path, DataConfig(kmer=kmer)).train.x)


def test_rrna16s_is_found_in_lamina_data_and_never_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.data.fasta import load_rrna16s, rrna16s_status

    monkeypatch.setenv("LAMINA_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(LaminaError, match=r"rrna16s not found.*lamina data fetch rrna16s"):
        load_rrna16s(DataConfig())
    assert "not fetched" in rrna16s_status()
    (tmp_path / "data" / "rrna16s").mkdir(parents=True)
    _motif_fasta(tmp_path / "data" / "rrna16s" / "rRNA16S.gold.fasta", n=12)
    ds = load_rrna16s(DataConfig(rank="class", min_class_examples=0))
    assert ds.name == "rrna16s" and ds.classes == ["Alpha", "Beta", "Gamma"] and len(ds.train) == 12


def test_a_k_mer_never_seen_in_training_stays_a_small_input(tmp_path: Path) -> None:
    """Its std in training is 0: it is centred, not divided by a vanishing std (a huge z-score)."""
    from lamina.data.base import build_dataset

    path = tmp_path / "a.fa"
    path.write_text("".join(f">s{i}\tBacteria; P{i % 2}; C\n{'AC' * 20 if i % 2 else 'AG' * 20}\n" for i in range(20)))
    ds = build_dataset(DataConfig(name=str(path), kmer=2, min_class_examples=2, val_fraction=0.0))
    tt = ds.train.x.std(0) == 0  # e.g. TT never occurs
    assert tt.any() and all(s == 1.0 for s, z in zip(ds.preprocess.std, tt.tolist(), strict=True) if z)
    x = ds.codec.read(["TTTTTTTTTT"])[0]
    assert ds.preprocess.apply(x).abs().max() < 10
