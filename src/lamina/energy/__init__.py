"""Energy: every run's joules (NVML counter, RAPL, or a labelled estimate) and their CO2e.

:class:`EnergyMeter` is a callback that reads a :class:`Counter` now and then and writes
``energy.jsonl``; :func:`choose_counter` picks the counter ``energy.meter`` names; ``co2``
turns joules into grams of CO2e at a grid intensity.
"""

from lamina.energy.co2 import co2e_g as co2e_g
from lamina.energy.co2 import grid_intensity as grid_intensity
from lamina.energy.counters import Counter as Counter
from lamina.energy.counters import CounterUnavailable as CounterUnavailable
from lamina.energy.counters import EstimateCounter as EstimateCounter
from lamina.energy.counters import NvmlCounter as NvmlCounter
from lamina.energy.counters import RaplCounter as RaplCounter
from lamina.energy.counters import choose_counter as choose_counter
from lamina.energy.counters import sampled_power_w as sampled_power_w
from lamina.energy.meter import EnergyMeter as EnergyMeter
from lamina.energy.meter import check_config as check_config
