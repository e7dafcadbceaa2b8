"""The errors a user's mistake raises, in a module of their own.

`UserError` is what the CLI prints as one line (`multipl-moe <command>: error: ...`) instead of a
traceback. It lives here, below every other module, so that the library can raise it without
importing the CLI: the CLI sits on top of the library, never under it. Each layer subclasses it
for its own mistakes (`data.config.DataError`, `training.config.TrainConfigError`,
`util.atomic.DiskFullError`, ...), also deriving from the builtin error they refine so that
library callers can catch `ValueError`/`OSError` as before.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input: reported as one line, never as a traceback."""
