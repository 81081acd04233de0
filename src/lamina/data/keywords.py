"""A synthetic keyword-spotting set: spoken words by espeak-ng, roughened by sox.

``make_keywords(out)`` writes ``out/train/<word>/*.wav`` and ``out/test/<word>/*.wav`` (16 kHz,
16-bit mono), a folder ``lamina train`` reads as it is. Each clip is one word said by one
**voice** (an English espeak-ng accent plus a voice variant, e.g. ``en-gb-scotland+m3``), at a
random speed and pitch, then through sox: an optional reverb, a random level, a random silence
before the word, and a little white noise. The voices of the test split are never heard in
training (disjoint variants too, so a test speaker's timbre is new), so test accuracy measures
generalisation to new speakers, not memorisation. Every setting of every clip is recorded in
``out/keywords.json``; the set is deterministic in ``seed`` (for a given espeak-ng and sox).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import wave
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from lamina.errors import LaminaError

DEFAULT_WORDS: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SMALL_WORDS: tuple[str, ...] = ("yes", "no", "left", "right")
SAMPLE_RATE = 16000
INSTALL = "apt-get install espeak-ng sox"
# Variants too far from speech to be a speaker (no voicing at all, or deliberately garbled).
_SKIP_VARIANTS = {"whisper", "whisperf", "Demonic", "UniRobot", "anikaRobot", "Tweaky"}
# Ranges each clip's settings are drawn from (uniformly).
SPEED = (120, 210)  # espeak-ng words per minute
PITCH = (25, 75)  # espeak-ng pitch, 0-99
LEVEL_DB = (-18.0, -1.0)  # peak level after sox's gain -n
OFFSET_S = (0.0, 0.25)  # silence before the word
SNR_DB = (20.0, 40.0)  # added white noise
REVERB = 0.4  # probability of a reverb (reverberance 10-60 %)


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise LaminaError(f"'{' '.join(cmd)}' failed ({e}); is espeak-ng working? {INSTALL}") from None


def check_tools() -> None:
    """A one-line LaminaError unless espeak-ng and sox are on the PATH."""
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        raise LaminaError(f"making keywords needs {' and '.join(missing)}: {INSTALL}")


def english_voices() -> list[str]:
    """espeak-ng's own English accents (``espeak-ng --voices=en``; not the MBROLA ones, which need
    extra packages)."""
    langs = []
    for line in _run(["espeak-ng", "--voices=en"]).splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5 and parts[1].startswith("en") and not parts[4].startswith("mb/"):
            langs.append(parts[1])
    return sorted(set(langs))


def voice_variants() -> list[str]:
    """espeak-ng's voice variants (``espeak-ng --voices=variant``: m1, f2, klatt, ...)."""
    out = []
    for line in _run(["espeak-ng", "--voices=variant"]).splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5 and parts[4].startswith("!v/") and parts[4][3:] not in _SKIP_VARIANTS:
            out.append(parts[4][3:])
    return sorted(set(out))


def split_voices(langs: Sequence[str], variants: Sequence[str], train: int, test: int,
                 rng: random.Random) -> tuple[list[str], list[str]]:
    """``train`` and ``test`` voices (``lang+variant``) whose variants are disjoint; every accent
    appears in both where there are enough voices."""
    variants = list(variants)
    rng.shuffle(variants)
    n_test = max(1, round(len(variants) * test / max(train + test, 1)))
    test_var, train_var = variants[:n_test], variants[n_test:]

    def pick(vs: list[str], n: int) -> list[str]:
        combos = [f"{lang}+{v}" for v in vs for lang in langs]
        rng.shuffle(combos)
        if n > len(combos):
            raise LaminaError(f"asked for {n} voices but espeak-ng has only {len(combos)} of this kind; ask for fewer")
        # round-robin over accents so each split covers all of them
        by_lang = {lang: [c for c in combos if c.split("+")[0] == lang] for lang in langs}
        chosen: list[str] = []
        while len(chosen) < n:
            for lang in langs:
                if by_lang[lang] and len(chosen) < n:
                    chosen.append(by_lang[lang].pop())
        return sorted(chosen)

    return pick(train_var, train), pick(test_var, test)


def _clip_settings(rng: random.Random) -> dict[str, Any]:
    return {"speed": rng.randint(*SPEED), "pitch": rng.randint(*PITCH),
            "level_db": round(rng.uniform(*LEVEL_DB), 2), "offset_s": round(rng.uniform(*OFFSET_S), 3),
            "snr_db": round(rng.uniform(*SNR_DB), 1),
            "reverb": rng.randint(10, 60) if rng.random() < REVERB else 0, "noise_seed": rng.getrandbits(32)}


def _synthesize(job: dict[str, Any], out: Path) -> None:
    """One clip: espeak-ng | sox (reverb, level, offset, resample) -> numpy (noise) -> 16-bit WAV."""
    speak = ["espeak-ng", "-v", job["voice"], "-s", str(job["speed"]), "-p", str(job["pitch"]), "--stdout",
             job["word"]]
    effects = (["reverb", str(job["reverb"])] if job["reverb"] else []) + [
        "gain", "-n", str(job["level_db"]), "pad", str(job["offset_s"]), "0"]
    sox = ["sox", "-D", "-t", "wav", "-", "-t", "raw", "-r", str(SAMPLE_RATE), "-e", "signed", "-b", "16", "-c", "1",
           "-", *effects]
    try:
        p1 = subprocess.Popen(speak, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        raw = subprocess.run(sox, stdin=p1.stdout, capture_output=True, check=True).stdout
        p1.stdout.close()  # type: ignore[union-attr]
        p1.wait()
    except (OSError, subprocess.CalledProcessError) as e:
        raise LaminaError(f"synthesizing '{job['word']}' with voice {job['voice']} failed ({e}); {INSTALL}") from None
    x = np.frombuffer(raw, "<i2").astype(np.float64) / 32768.0
    if len(x) == 0:
        raise LaminaError(f"espeak-ng gave no audio for '{job['word']}' with voice {job['voice']}")
    rms = np.sqrt(np.mean(x**2)) + 1e-9
    noise = np.random.default_rng(job["noise_seed"]).standard_normal(len(x))
    x = x + noise * rms / 10 ** (job["snr_db"] / 20)
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    path = out / job["file"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def make_keywords(out: Path, *, words: Sequence[str] = DEFAULT_WORDS, per_voice: int = 5, test_voices: int = 24,
                  train_voices: int = 100, seed: int = 0, small: bool = False, workers: int = 0,
                  console: Any = None) -> dict[str, Any]:
    """Write a synthetic keyword set to ``out`` (``train/<word>/*.wav``, ``test/<word>/*.wav``,
    ``keywords.json``) and return what ``keywords.json`` records.

    Args:
        out: the folder to write (files already there are overwritten).
        words: the keywords (class names).
        per_voice: clips of each word per voice (each with its own speed, pitch, level, ...).
        test_voices: voices of the test split, disjoint from the training voices.
        train_voices: voices of the training split.
        seed: everything random (voices, settings, noise) follows from it.
        small: a quick set (4 words, 12 training and 4 test voices, 4 clips each: 256 clips)
            for the one-minute demo; overrides words/voices/per_voice.
        workers: parallel synthesis threads; 0: one per CPU.
        console: a rich Console for the progress bar (None: stderr).
    """
    import os

    check_tools()
    if small:
        words, per_voice, train_voices, test_voices = SMALL_WORDS, 4, 12, 4
    words = [str(w).strip() for w in words]
    if len(set(words)) < 2 or any(not w or "/" in w for w in words):
        raise LaminaError(f"make_keywords needs at least 2 distinct words without '/', got {words}")
    if per_voice < 1 or train_voices < 1 or test_voices < 1:
        raise LaminaError("per_voice, train_voices and test_voices must each be at least 1")
    rng = random.Random(seed)
    langs, variants = english_voices(), voice_variants()
    if not langs or len(variants) < 2:
        raise LaminaError(f"espeak-ng lists no English voices or variants; reinstall it: {INSTALL}")
    train, test = split_voices(langs, variants, train_voices, test_voices, rng)
    jobs = []
    for split, voices in (("train", train), ("test", test)):
        for voice in voices:
            for word in words:
                for k in range(per_voice):
                    name = f"{voice.replace('+', '_')}_{k}.wav"
                    jobs.append({"file": f"{split}/{word}/{name}", "split": split, "word": word, "voice": voice,
                                 **_clip_settings(rng)})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _run_jobs(jobs, out, workers or os.cpu_count() or 1, console)
    record = {"sample_rate": SAMPLE_RATE, "seed": seed, "small": small, "words": words, "per_voice": per_voice,
              "accents": langs, "train_voices": train, "test_voices": test,
              "train_variants": sorted({v.split("+")[1] for v in train}),
              "test_variants": sorted({v.split("+")[1] for v in test}),
              "ranges": {"speed": SPEED, "pitch": PITCH, "level_db": LEVEL_DB, "offset_s": OFFSET_S, "snr_db": SNR_DB,
                         "reverb_probability": REVERB},
              "clips": {"train": sum(j["split"] == "train" for j in jobs), "test": sum(j["split"] == "test" for j in jobs)},
              "espeak_ng": _run(["espeak-ng", "--version"]).strip(), "files": jobs}
    (out / "keywords.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def _run_jobs(jobs: list[dict[str, Any]], out: Path, workers: int, console: Any) -> None:
    from rich.console import Console
    from rich.progress import Progress

    with Progress(transient=True, console=console or Console(stderr=True)) as bar, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        task = bar.add_task(f"synthesizing {len(jobs):,} clips", total=len(jobs))
        for _ in pool.map(lambda j: _synthesize(j, out), jobs):
            bar.advance(task)
