"""Tasks: what is specific to a kind of learning (see :mod:`lamina.tasks.base`), by name."""

from lamina.registry import Registry
from lamina.tasks.base import Task as Task
from lamina.tasks.classify import Classify as Classify
from lamina.tasks.diffusion import Diffusion as Diffusion
from lamina.tasks.language import LanguageModel as LanguageModel
from lamina.tasks.regress import Regress as Regress
from lamina.tasks.vae import VAE as VAE

TASKS: Registry[type[Task]] = Registry("task")
for _cls in (Classify, Regress, LanguageModel, VAE, Diffusion):
    TASKS.register(_cls.name, _cls)
