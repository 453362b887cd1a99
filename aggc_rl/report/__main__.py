"""Entry point of ``python -m aggc_rl.report``; see :mod:`aggc_rl.report.cli`."""

import sys

from aggc_rl.report.cli import main

sys.exit(main())
