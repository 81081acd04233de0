"""The report's energy section: a run's energy and CO2e, per epoch and per point of its headline.

Read from ``energy.jsonl`` (the meter's records) and ``summary.json`` (``energy_j``, ``co2e_g``,
``energy_method``, ``energy_estimated``, ...). A number that comes from the power model rather than a
hardware counter says "estimated" wherever it is shown.
"""

from __future__ import annotations

from typing import Any

from lamina.reporting.html import RunFolder, Section, esc, note, para, register_section, run_task, table

JOULES_PER_WH = 3600.0
METHODS = {"nvml": "measured by the GPU's NVML energy counter", "rapl": "measured by the CPU's RAPL counters",
           "estimate": "estimated from a power model (no energy counter here)"}


@register_section
def section_energy(run: RunFolder) -> Section | None:
    s = run.summary
    records = run.jsonl("energy.jsonl") or []
    epochs = [r for r in records if r.get("kind") == "epoch"]
    total = _number(s.get("energy_j"))
    if total is None:  # a run still going, or killed: the newest record's total
        total = next((_number(r.get("total_joules")) for r in reversed(records)), None)
    if total is None:
        return None
    last = records[-1] if records else {}
    method = str(s.get("energy_method") or last.get("method") or "?")
    estimated = bool(s.get("energy_estimated", last.get("estimated", method == "estimate")))
    tag = " (estimated)" if estimated else ""
    co2, grid = _number(s.get("co2e_g")), _number(s.get("grid_intensity_g_per_kwh"))
    cards = [(f"energy{tag}", energy(total)), (f"CO2e{tag}", grams(co2) if co2 is not None else "—")]
    headline = _per_headline(run, total)
    if headline:
        cards.append((f"{headline[0]}{tag}", headline[1]))
    seconds = _number(s.get("train_seconds"))
    if seconds:
        cards.append((f"mean power over training{tag}", f"{total / seconds:.3g} W"))
    body = '<div class="cards">' + "".join(
        f'<div class="card"><span>{esc(k)}</span><b>{esc(v)}</b></div>' for k, v in cards) + "</div>"
    how = METHODS.get(method, method)
    text = f"The run's energy is {how}" + (f": {s['energy_note']}." if s.get("energy_note") else ".")
    if grid is not None:
        text += f" CO2e at {grid:g} gCO2e/kWh ({s.get('grid_source', 'source unknown')})."
    body += para(text)
    if estimated:
        body += note("Estimated: no energy counter could be read on this machine, so these figures come from "
                     "a power model, not a measurement; compare them only with other estimates.")
    resets = s.get("energy_resets", last.get("resets"))
    if isinstance(resets, int) and resets > 0:
        body += note(f"The counter went backwards {resets} time(s) (a driver reload); those windows count 0 J, "
                     "so the total is a lower bound.")
    if epochs:
        rows = [(r.get("epoch", "?"), _wh(r.get("joules")), _fixed(r.get("seconds"), 1),
                 _fixed(r.get("watts"), 1), _wh(r.get("total_joules"))) for r in epochs]
        body += table(rows, ["epoch", f"energy, Wh{tag}", "seconds", f"mean W{tag}", f"cumulative Wh{tag}"])
    return Section("energy", "Energy and CO2e", body)


def energy(joules: float) -> str:
    """Joules as Wh (or kWh) with the joules beside them: ``'1.5 Wh (5,400 J)'``.

    >>> energy(5400.0)
    '1.5 Wh (5,400 J)'
    """
    wh = joules / JOULES_PER_WH
    big = f"{wh / 1000:.3g} kWh" if wh >= 1000 else f"{wh:.3g} Wh"
    return f"{big} ({joules:,.0f} J)"


def grams(g: float) -> str:
    """Grams of CO2e, as kg from 1,000 g on.

    >>> grams(12.345)
    '12.3 g'
    """
    return f"{g / 1000:.3g} kg" if g >= 1000 else f"{g:.3g} g"


def _per_headline(run: RunFolder, joules: float) -> tuple[str, str] | None:
    s = run.summary
    acc = _number(s.get("test_accuracy"))
    if run_task(run) != "language-model" and acc is not None and acc > 0:
        return "per point of test accuracy", energy(joules / (100.0 * acc))
    steps = _number(s.get("steps"))
    if steps:
        return "per 1,000 training steps", energy(1000.0 * joules / steps)
    return None


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _wh(joules: Any) -> str:
    j = _number(joules)
    return "—" if j is None else f"{j / JOULES_PER_WH:.4g}"


def _fixed(x: Any, digits: int) -> str:
    v = _number(x)
    return "—" if v is None else f"{v:.{digits}f}"
