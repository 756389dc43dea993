"""Synthetic probe tasks, as registered specs (:mod:`.registry`), one file each; a task is a data source
(``data: task:<name>?level=<level>&<knob>=<value>``: :mod:`.source`), trained and scored by the same trainer
and evaluation as text (:mod:`mswelu.training.evaluation`), with the loss and the accuracy on the answers
only."""

from mswelu.data.tasks import composite, induction_heads, inverse_matching, mqar, selective_copying  # noqa: F401
from mswelu.data.tasks.registry import IGNORE, TASKS, Example, Task, register_task, task_spec
from mswelu.data.tasks.source import TASK_PREFIX, TaskLoader, TaskSource, is_task_source

__all__ = [
    "IGNORE",
    "TASKS",
    "TASK_PREFIX",
    "Example",
    "Task",
    "TaskLoader",
    "TaskSource",
    "is_task_source",
    "register_task",
    "task_spec",
]
