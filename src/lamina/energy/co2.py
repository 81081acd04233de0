"""What a run's joules cost in CO2e: the grid's carbon intensity (gCO2e per kWh) and the product.

``energy.grid_intensity`` is a number, a country (ISO 3166 alpha-3, from CodeCarbon's offline
tables: the optional ``codecarbon`` package), or empty for the world average CodeCarbon itself
falls back to. The intensity is an annual average of the electricity mix, not of the hour the run
took, and covers generation only: the CO2e figure is an order of magnitude, not an audit.
"""

from __future__ import annotations

import importlib.util
import json
import math
from importlib import metadata
from pathlib import Path
from typing import Any

from lamina.errors import LaminaError, did_you_mean

JOULES_PER_KWH = 3.6e6
# CodeCarbon's own world average (codecarbon/data/private_infra/carbon_intensity_per_source.json,
# "world_average"), which it uses for any country it has no data for.
WORLD_AVERAGE_G_PER_KWH = 475.0
WORLD_AVERAGE_SOURCE = ("world average 475 gCO2e/kWh (IEA Global Energy & CO2 Status Report 2019, "
                        "as CodeCarbon uses it)")
_TABLE = ("data", "private_infra", "global_energy_mix.json")  # inside the codecarbon package


def co2e_g(joules: float, g_per_kwh: float) -> float:
    """Grams of CO2e for ``joules`` of electricity at ``g_per_kwh``.

    >>> co2e_g(3.6e6, 475.0)
    475.0
    """
    return joules / JOULES_PER_KWH * g_per_kwh


def grid_intensity(spec: str) -> tuple[float, str]:
    """The grid carbon intensity ``energy.grid_intensity`` names, in gCO2e/kWh, and its source.

    Args:
        spec: "" (the world average), a number of gCO2e/kWh (0 or more), or a 3-letter ISO
            country code looked up in CodeCarbon's offline tables (needs ``pip install codecarbon``).

    >>> grid_intensity("120")
    (120.0, 'energy.grid_intensity')
    """
    text = str(spec).strip()
    if not text:
        return WORLD_AVERAGE_G_PER_KWH, WORLD_AVERAGE_SOURCE
    try:
        value = float(text)
    except ValueError:
        if len(text) == 3 and text.isalpha():
            return _country(text.upper())
        raise LaminaError(f"energy.grid_intensity '{text}' is neither a number of gCO2e per kWh nor a "
                          "3-letter country code (e.g. 300 or FRA)") from None
    if not (math.isfinite(value) and value >= 0):
        raise LaminaError(f"energy.grid_intensity must be a finite number of gCO2e per kWh, 0 or more, not {text}")
    return value, "energy.grid_intensity"


def codecarbon_table() -> Path | None:
    """Where the installed codecarbon keeps its per-country energy mix, or None if it is absent.

    Found without importing codecarbon (its import starts its logging and scheduler machinery).
    """
    spec = importlib.util.find_spec("codecarbon")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder).joinpath(*_TABLE)
        if path.is_file():
            return path
    return None


def _country(code: str) -> tuple[float, str]:
    path = codecarbon_table()
    if path is None:
        raise LaminaError(f"energy.grid_intensity={code} needs CodeCarbon's country tables: pip install codecarbon, "
                          "or give a number of gCO2e per kWh")
    table = _load(path)
    row = table.get(code)
    if not isinstance(row, dict):
        hint = did_you_mean(code, table)
        if not hint.startswith("did you mean"):  # not the 200-odd codes on one line
            hint = f"see {path.name} in the codecarbon package"
        raise LaminaError(f"energy.grid_intensity: no country '{code}' in CodeCarbon's tables: {hint} "
                          "(ISO 3166 alpha-3), or give a number")
    value = row.get("carbon_intensity")
    if not isinstance(value, int | float):
        raise LaminaError(f"CodeCarbon's table has no carbon intensity for '{code}': give a number of gCO2e per kWh")
    try:
        version = metadata.version("codecarbon")
    except metadata.PackageNotFoundError:
        version = "?"
    return float(value), (f"CodeCarbon {version} offline table ({row.get('country_name', code)}, "
                          f"{row.get('year', 'year unknown')})")


def _load(path: Path) -> dict[str, Any]:
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LaminaError(f"CodeCarbon's country table {path} is unreadable: {e}") from None
    if not isinstance(table, dict):
        raise LaminaError(f"CodeCarbon's country table {path} is not a mapping: reinstall codecarbon")
    return table
