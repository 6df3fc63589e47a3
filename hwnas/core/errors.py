"""User-facing errors.

Every error a user can cause (a bad file, an unknown name, an impossible request) is raised as
a :class:`HwnasError`. The CLI prints its message on one line and exits with code 2, without a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class HwnasError(Exception):
    """An error caused by the user's input; its message names the problem and the fix."""


class SpecError(HwnasError):
    """A malformed architecture or search-space description.

    The message reads ``SOURCE: FIELD: PROBLEM``, for example
    ``arch.json: blocks[3].op: unknown block 'ir_k7'; allowed: ...``.
    """

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem}")
