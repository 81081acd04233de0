"""Tasks: what is specific to a kind of learning (see :mod:`lamina.tasks.base`), by name."""

from lamina.registry import Registry
from lamina.tasks.base import Task as Task
from lamina.tasks.classify import Classify as Classify
from lamina.tasks.language import LanguageModel as LanguageModel
from lamina.tasks.regress import Regress as Regress

TASKS: Registry[type[Task]] = Registry("task")
for _cls in (Classify, Regress, LanguageModel):
    TASKS.register(_cls.name, _cls)
