"""Column names of the data handed from step to step.

`prepare_data` maps whatever columns the user's file has onto these names, so every later step
reads one schema.  The names follow the course (`review_body`, `star_rating`, `sentiment`,
`product_category`).
"""

from __future__ import annotations

REVIEW_ID = "review_id"
TEXT = "review_body"
RATING = "star_rating"
LABEL = "sentiment"
FACET = "product_category"
#: Optional grouping column for the conditional metric CDDL (e.g. age band, department).
GROUP = "group_variable"

#: Sentiment classes: value used in the data (and by Clarify) -> class name.
SENTIMENTS: dict[int, str] = {-1: "negative", 0: "neutral", 1: "positive"}
#: Model class ids 0..2 (what a classifier predicts) <-> sentiment values -1..1.
LABEL_TO_ID: dict[int, int] = {-1: 0, 0: 1, 1: 2}
ID_TO_LABEL: dict[int, int] = {v: k for k, v in LABEL_TO_ID.items()}
#: The positive label value for the bias check (positive sentiment, as in the course).
POSITIVE_LABEL = 1

#: Columns of the prepared-reviews Parquet written by `prepare_data`, in order.
PREPARED_COLUMNS = (REVIEW_ID, TEXT, RATING, LABEL, FACET)

#: Columns of evaluate's test-split predictions (deploy's smoke test compares the model server with them):
#: `review_id`, the predicted class name, and one probability column per class (prefix + class name).
PREDICTED_LABEL = "predicted_label"
PROBABILITY_PREFIX = "probability_"

#: Tokens per review at most (longer reviews are cut): the default of featurize's, train's, tune's, serving's and
#: deploy's ``max_seq_length``.
MAX_SEQ_LENGTH = 128

#: The served model's name (the server's V1/V2 routes, deploy's smoke test) and the InferenceService's by default.
MODEL_NAME = "review-sentiment"

#: Written by train beside the model (stop reason, policy, health rules that fired); evaluate's gate reads it.
TRAINING_OUTCOME_FILE = "training_outcome.json"


def text_key(text: str) -> str:
    """The text of a review as duplicates are found: surrounding whitespace stripped, inner runs of whitespace
    as one space (prepare de-duplicates on it; featurize never puts one key in two splits).

    A text already in that form is returned itself, not as an equal copy: a list of the keys of a million
    reviews then holds few texts a second time."""
    key = " ".join(str(text).split())
    return text if type(text) is str and key == text else key
