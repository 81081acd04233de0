"""Tasks: what is specific to a kind of learning (see :mod:`lamina.tasks.base`), by name."""

from lamina.registry import Registry
from lamina.tasks.base import Task as Task
from lamina.tasks.classify import Classify as Classify
from lamina.tasks.language import LanguageModel as LanguageModel

TASKS: Registry[type[Task]] = Registry("task")
for _cls in (Classify, LanguageModel):
    TASKS.register(_cls.name, _cls)
