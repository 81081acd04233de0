"""The synthetic keyword set: espeak-ng voices, disjoint between train and test (skipped without espeak-ng/sox)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lamina.data import keywords
from lamina.errors import LaminaError

needs_tools = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                                 reason="needs espeak-ng and sox (apt-get install espeak-ng sox)")


@needs_tools
def test_make_keywords_writes_disjoint_voices(tmp_path: Path) -> None:
    from lamina.data.audio import read_wav

    rec = keywords.make_keywords(tmp_path / "kw", words=("yes", "no"), per_voice=1, train_voices=3, test_voices=2,
                                 seed=1)
    assert set(rec["train_voices"]).isdisjoint(rec["test_voices"])
    assert set(rec["train_variants"]).isdisjoint(rec["test_variants"])
    assert rec["clips"] == {"train": 6, "test": 4}
    assert json.loads((tmp_path / "kw" / "keywords.json").read_text())["test_voices"] == rec["test_voices"]
    for split, n in (("train", 3), ("test", 2)):
        for word in ("yes", "no"):
            files = sorted((tmp_path / "kw" / split / word).glob("*.wav"))
            assert len(files) == n
            x, rate = read_wav(files[0])
            assert rate == 16000 and x.shape[0] == 1 and 0.05 < float(x.abs().max()) <= 1.0
    again = keywords.make_keywords(tmp_path / "kw2", words=("yes", "no"), per_voice=1, train_voices=3,
                                   test_voices=2, seed=1)
    assert again["files"] == rec["files"]  # deterministic in the seed
    first = sorted((tmp_path / "kw" / "test" / "no").glob("*.wav"))[0]
    assert first.read_bytes() == (tmp_path / "kw2" / "test" / "no" / first.name).read_bytes()


def test_voice_split_is_disjoint_and_covers_accents() -> None:
    import random

    langs = ["en-gb", "en-us", "en-029"]
    variants = [f"v{i}" for i in range(20)]
    train, test = keywords.split_voices(langs, variants, 12, 6, random.Random(0))
    assert len(train) == 12 and len(test) == 6 and not set(train) & set(test)
    assert not {v.split("+")[1] for v in train} & {v.split("+")[1] for v in test}
    assert {v.split("+")[0] for v in test} == set(langs)


def test_missing_tools_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(LaminaError, match="apt-get install espeak-ng sox"):
        keywords.make_keywords(Path("/nonexistent"), small=True)
