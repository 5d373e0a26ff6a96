"""``python -m consumers``: run the consumer service until SIGTERM or SIGINT.

Settings come from ``VREC_*`` variables; the exit code is 0 after a signal,
1 after a failure (logged), so a supervisor can restart it safely.
"""

import sys

from vrec.ingest import run_consumer
from vrec.service import run_service

if __name__ == "__main__":
    sys.exit(run_service("consumers", run_consumer))
