"""``python -m kronecker_gp.cli``: the same as the ``kronecker-gp`` command."""

from __future__ import annotations

import sys

from kronecker_gp.cli import main

sys.exit(main())
