"""`python -m multipl_moe ...` is the `multipl-moe` command."""

import sys

from multipl_moe.cli import main

sys.exit(main())
