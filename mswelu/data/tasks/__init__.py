"""Synthetic probe tasks, one file each, registered as specs (:mod:`.registry`); a task is a data source
(``data: task:<name>?level=...``, :mod:`.source`) trained and scored like text, on the answers only.
"""

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
