"""The reasoning task suite: generated puzzles and packaged data sets behind one `Task` interface.

    >>> from latentreason.tasks import get_task, list_tasks
    >>> "sudoku" in list_tasks()
    True
    >>> task = get_task("sudoku", size=4, givens=8, num_train=10, num_test=5, seed=0)

Registered tasks: `sudoku`, `maze`, `sort_words` (a control task), `addition`, `parity`, `permutations`
(state tracking in S3-S5), `shell_game` (the same in English), `arc`.
Each module documents its text layout; `Task.option_help()` lists a task's options.
"""

from . import addition, arc, maze, parity, permutations, shell_game, sort_words, sudoku  # noqa: F401  (importing registers the tasks)
from .arc import evaluate_pass_at_2, pass_at_2
from .common import TASKS, Task, get_task, list_tasks, register_task, score_cells

__all__ = ["TASKS", "Task", "evaluate_pass_at_2", "get_task", "list_tasks", "pass_at_2", "register_task", "score_cells"]
