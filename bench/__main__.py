"""`python -m bench ingest|latency|live|dashboard`: `carehub bench` without its entry point.

For a checkout whose installed metadata predates the `carehub.commands` entry point.
"""

import sys

from bench.cli import register
from hub.cli import main

sys.exit(main(["bench", *sys.argv[1:]], command_groups=[register]))
