"""`python -m hub.cli`: the `carehub` command without its console script."""

import sys

from hub.cli import main

sys.exit(main())
