"""Residue alphabets of biological sequences (DNA, RNA, protein): the letters, their ids and what
each ambiguity letter stands for. Below both the data module that reads FASTA files
(:mod:`lamina.data.fasta`) and the models that one-hot the ids (:mod:`lamina.models.sequence`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from lamina.errors import LaminaError, did_you_mean


@dataclass(frozen=True)
class Alphabet:
    """Residue letters and their ids: 0 padding, then ``bases``, then the ambiguity letters.

    Args:
        name: ``dna`` | ``rna`` | ``protein``.
        bases: the standard residues, in id order; also the one-hot channels.
        ambiguity: letter -> the standard residues it stands for (a soft one-hot over them).
        complement: base -> its complement (nucleotides only; ambiguity letters follow from it).
    """

    name: str
    bases: str
    ambiguity: dict[str, str]
    complement: dict[str, str] = field(default_factory=dict)

    @property
    def letters(self) -> str:
        """Every letter, in id order (id = index + 1)."""
        return self.bases + "".join(self.ambiguity)

    @property
    def vocab(self) -> int:
        """Ids in use, padding included."""
        return 1 + len(self.letters)

    def meaning(self, letter: str) -> str:
        """The standard residues ``letter`` may be."""
        return letter if letter in self.bases else self.ambiguity[letter]

    def soft_onehot(self, vocab: int | None = None) -> Tensor:
        """(vocab, len(bases)) float32: row ``id`` is that residue's (soft) one-hot; row 0 is zeros."""
        table = torch.zeros(max(vocab or self.vocab, self.vocab), len(self.bases))
        for i, letter in enumerate(self.letters, start=1):
            for b in self.meaning(letter):
                table[i, self.bases.index(b)] = 1.0 / len(self.meaning(letter))
        return table

    def complement_ids(self) -> Tensor:
        """(vocab,) int64: the id of each id's complement (0 -> 0); only for nucleotides."""
        if not self.complement:
            raise LaminaError(f"{self.name} sequences have no reverse complement; it is for dna and rna")
        by_set = {frozenset(self.meaning(c)): c for c in self.letters}
        out = torch.zeros(self.vocab, dtype=torch.long)
        for i, letter in enumerate(self.letters, start=1):
            comp = frozenset(self.complement[b] for b in self.meaning(letter))
            out[i] = self.letters.index(by_set[comp]) + 1
        return out


_NUC_AMBIGUITY = {"N": "ACGT", "R": "AG", "Y": "CT", "S": "CG", "W": "AT", "K": "GT", "M": "AC",
                  "B": "CGT", "D": "AGT", "H": "ACT", "V": "ACG"}  # fmt: skip
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
ALPHABETS: dict[str, Alphabet] = {
    "dna": Alphabet("dna", "ACGT", dict(_NUC_AMBIGUITY), {"A": "T", "T": "A", "C": "G", "G": "C"}),
    "rna": Alphabet("rna", "ACGU", {k: v.replace("T", "U") for k, v in _NUC_AMBIGUITY.items()},
                    {"A": "U", "U": "A", "C": "G", "G": "C"}),
    # B = D or N, Z = E or Q, J = I or L, X = any; selenocysteine U reads as C, pyrrolysine O as K
    "protein": Alphabet("protein", AMINO_ACIDS, {"X": AMINO_ACIDS, "B": "DN", "Z": "EQ", "J": "IL", "U": "C", "O": "K"}),
}


def get_alphabet(name: str) -> Alphabet:
    """The alphabet called ``name`` (dna | rna | protein); others raise ``LaminaError``."""
    key = str(name).strip().lower()
    if key not in ALPHABETS:
        raise LaminaError(f"unknown alphabet '{name}': {did_you_mean(key, ALPHABETS)}")
    return ALPHABETS[key]
