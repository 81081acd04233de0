"""lamina's models: a registry of builders and one contract (stages, features, head)."""

from lamina.models.base import Model as Model
from lamina.models.cnn import CNN as CNN
from lamina.models.cnn import ResNet as ResNet
from lamina.models.factory import DATA_KWARGS as DATA_KWARGS
from lamina.models.factory import MODEL_KWARGS as MODEL_KWARGS
from lamina.models.factory import MODELS as MODELS
from lamina.models.factory import TASK_KWARGS as TASK_KWARGS
from lamina.models.factory import create_model as create_model
from lamina.models.layers import ACTS as ACTS
from lamina.models.layers import NORMS as NORMS
from lamina.models.layers import BasicBlock as BasicBlock
from lamina.models.layers import ConvNormAct as ConvNormAct
from lamina.models.layers import get_act as get_act
from lamina.models.layers import get_norm as get_norm
from lamina.models.mlp import MLP as MLP
from lamina.models.text import TextBag as TextBag
from lamina.models.text import TextCNN as TextCNN
from lamina.models.text import TextTransformer as TextTransformer
from lamina.models.transformer import GPT as GPT
from lamina.models.transformer import KVCache as KVCache
