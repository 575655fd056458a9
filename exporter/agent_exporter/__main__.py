"""`python -m agent_exporter`, the same as the `agent-exporter` command."""

import sys

from .cli import main

sys.exit(main())
