"""Temporary alias of `multipl_moe.util.atomic` while the demo (being rewritten) still imports
this name; removed once it imports `multipl_moe.util.atomic`."""

from .util.atomic import *  # noqa: F401,F403
from .util.atomic import atomic_dir, atomic_file  # noqa: F401
