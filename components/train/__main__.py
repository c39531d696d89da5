"""`python -m components.train --help`: fine-tune the review-sentiment classifier (see `cli`)."""

from components.train.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
