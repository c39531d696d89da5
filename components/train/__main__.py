"""`python -m components.train --help`: fine-tune the review-sentiment classifier (see `cli`)."""

import sys

from components.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
