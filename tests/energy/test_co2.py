"""Grid intensity: numbers, errors, the world average, and countries from CodeCarbon's offline tables."""

from __future__ import annotations

import json

import pytest

from lamina.energy import co2
from lamina.energy.co2 import WORLD_AVERAGE_G_PER_KWH, co2e_g, grid_intensity
from lamina.errors import LaminaError


def test_numbers_and_the_world_average() -> None:
    assert grid_intensity("120") == (120.0, "energy.grid_intensity")
    assert grid_intensity(" 0 ")[0] == 0.0 and grid_intensity("56.5")[0] == 56.5
    value, source = grid_intensity("")
    assert value == WORLD_AVERAGE_G_PER_KWH == 475.0 and "IEA" in source and "CodeCarbon" in source
    assert co2e_g(3.6e6, 475.0) == 475.0 and co2e_g(1800.0, 100.0) == pytest.approx(0.05)


@pytest.mark.parametrize("spec", ["abcd", "-3", "nan", "inf", "1e", "12 g"])
def test_bad_numbers_are_one_line_errors(spec: str) -> None:
    with pytest.raises(LaminaError, match=r"energy.grid_intensity") as err:
        grid_intensity(spec)
    assert "\n" not in str(err.value)


def test_country_needs_codecarbon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(co2, "codecarbon_table", lambda: None)
    with pytest.raises(LaminaError, match=r"pip install codecarbon.*number"):
        grid_intensity("FRA")


def test_countries_match_codecarbons_own_tables() -> None:
    pytest.importorskip("codecarbon")
    from codecarbon.input import DataSource

    mix = DataSource().get_global_energy_mix_data()  # codecarbon's own reader: the reference
    for code in ("FRA", "DEU", "IND", "USA"):
        value, source = grid_intensity(code)
        assert value == pytest.approx(mix[code]["carbon_intensity"]) and "CodeCarbon" in source
    assert grid_intensity("fra") == grid_intensity("FRA") and "France" in grid_intensity("FRA")[1]
    with pytest.raises(LaminaError, match=r"did you mean 'FR"):
        grid_intensity("FRX")
    with pytest.raises(LaminaError, match=r"no country 'ABC'") as err:
        grid_intensity("abc")
    assert "\n" not in str(err.value)
    with pytest.raises(LaminaError, match=r"global_energy_mix.json"):  # no close match: not 200 codes on a line
        grid_intensity("QQQ")


def test_a_damaged_table_is_a_one_line_error(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "global_energy_mix.json"
    bad.write_text("{oops")
    monkeypatch.setattr(co2, "codecarbon_table", lambda: bad)
    with pytest.raises(LaminaError, match=r"unreadable"):
        grid_intensity("FRA")
    bad.write_text(json.dumps({"FRA": {"country_name": "France"}}))
    with pytest.raises(LaminaError, match=r"no carbon intensity"):
        grid_intensity("FRA")
