"""``python -m trainer``: keep the model and the Redis lists fresh until stopped.

Settings come from ``VREC_*`` variables; the exit code is 0 after SIGTERM or
SIGINT, 1 after a failure (logged), so a supervisor can restart it safely.
"""

import sys

from vrec.schedule import run_trainer
from vrec.service import run_service

if __name__ == "__main__":
    sys.exit(run_service("trainer", run_trainer))
