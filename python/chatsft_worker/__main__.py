"""python -m chatsft_worker JOB.json   (or `probe` to print the runtime as JSON)."""
import sys

from .worker import main

sys.exit(main(sys.argv[1:]))
