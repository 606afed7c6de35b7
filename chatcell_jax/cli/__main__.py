"""`python -m chatcell_jax.cli` is the `chatcell` command."""

import sys

from chatcell_jax.cli import main

sys.exit(main())
