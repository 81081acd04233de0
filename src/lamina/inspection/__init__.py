"""Inspection: what each stage of a trained network learned, through the ``stages()`` contract.

Linear probes, CKA, activation statistics, gradient flow, filters and top activations,
attributions (captum, imported only when used), and ``inspect_run`` writing them all as JSON.
For text: attention maps of a Transformer, next-character-class probes of a language model and
token attributions of a text classifier.
"""

from lamina.inspection.activations import activation_stats as activation_stats
from lamina.inspection.attention import attention_maps as attention_maps
from lamina.inspection.attribution import attributions as attributions
from lamina.inspection.cka import MinibatchCKA as MinibatchCKA
from lamina.inspection.cka import cka_between_models as cka_between_models
from lamina.inspection.cka import cka_between_stages as cka_between_stages
from lamina.inspection.cka import linear_cka as linear_cka
from lamina.inspection.features import stage_features as stage_features
from lamina.inspection.filters import first_layer_filters as first_layer_filters
from lamina.inspection.filters import top_activating as top_activating
from lamina.inspection.gradients import GradientFlow as GradientFlow
from lamina.inspection.hooks import capture as capture
from lamina.inspection.probes import fit_probe as fit_probe
from lamina.inspection.probes import probe_stages as probe_stages
from lamina.inspection.run import inspect_run as inspect_run
from lamina.inspection.text import next_char_probes as next_char_probes
from lamina.inspection.text import token_attributions as token_attributions
