"""Studies: drivers that run many sessions, such as sample-efficiency curves (:func:`run_curve`)."""

from lamina.studies.curve import DEFAULT_FRACTIONS as DEFAULT_FRACTIONS
from lamina.studies.curve import nested_subsets as nested_subsets
from lamina.studies.curve import point_batch_size as point_batch_size
from lamina.studies.curve import point_epochs as point_epochs
from lamina.studies.curve import point_lr as point_lr
from lamina.studies.curve import run_curve as run_curve
from lamina.studies.fit import HESTNESS_2017_IMAGE_CLASSIFICATION as HESTNESS_2017_IMAGE_CLASSIFICATION
from lamina.studies.fit import PowerLawFit as PowerLawFit
from lamina.studies.fit import fit_power_law as fit_power_law
