"""`python -m components.tune --help`: run a Katib-style search with the training CLI as its trial (see `cli`)."""

import sys

from components.tune.cli import main

if __name__ == "__main__":
    sys.exit(main())
