"""Reporting: figures and a self-contained HTML report, read only from a run folder."""

from lamina.reporting import sections as sections  # registers lamina's sections, in report order
from lamina.reporting.html import SECTIONS as SECTIONS
from lamina.reporting.html import RunFolder as RunFolder
from lamina.reporting.html import Section as Section
from lamina.reporting.html import register_section as register_section
from lamina.reporting.html import render_report as render_report
from lamina.reporting.html import write_report as write_report
