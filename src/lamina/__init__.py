"""lamina: raw data in, a trained deep network out."""

__version__ = "0.1.0"

from lamina.api import Predictor as Predictor
from lamina.api import RunResult as RunResult
from lamina.api import evaluate as evaluate
from lamina.api import load as load
from lamina.api import resume as resume
from lamina.api import train as train
from lamina.config import RunConfig as RunConfig
from lamina.errors import LaminaError as LaminaError
