"""Reporting: figures and a self-contained HTML report, read only from a run folder.

Importing a module of sections registers them; the report shows them in that order: lamina's
own (``sections``), then generative models, game runs (``rl``), audio, regression, robustness, energy.
"""

from lamina.reporting import sections as sections  # noqa: I001  (registration order is report order)
from lamina.reporting import generative as generative
from lamina.reporting import rl as rl
from lamina.reporting import audio as audio
from lamina.reporting import regression as regression
from lamina.reporting import robustness as robustness
from lamina.reporting import energy as energy
from lamina.reporting.html import SECTIONS as SECTIONS
from lamina.reporting.html import RunFolder as RunFolder
from lamina.reporting.html import Section as Section
from lamina.reporting.html import register_section as register_section
from lamina.reporting.html import render_report as render_report
from lamina.reporting.html import write_report as write_report
