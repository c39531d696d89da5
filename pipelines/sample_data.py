"""A deterministic generator of SYNTHETIC product reviews in the schema of the course CSV.

`make run` on a fresh clone has no real data (the course CSV is not redistributed with the project), so
it runs on these. They are made up from templates: clearly positive, negative and mixed/neutral wording,
negations ("not as small as I feared", "not flattering"), uneven category sizes, a rare category that
cleaning drops and a few rows without text — enough for every step to do real work. Metrics on them say
nothing about real reviews.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

COLUMNS = [
    "",
    "Clothing ID",
    "Age",
    "Title",
    "Review Text",
    "Rating",
    "Recommended IND",
    "Positive Feedback Count",
    "Division Name",
    "Department Name",
    "Class Name",
]

# (class name, department, division, relative weight): uneven like the real data; "Casual bottoms" is rare.
CATEGORIES = [
    ("Dresses", "Dresses", "General", 30),
    ("Knits", "Tops", "General", 24),
    ("Blouses", "Tops", "General", 16),
    ("Sweaters", "Tops", "General Petite", 8),
    ("Pants", "Bottoms", "General", 7),
    ("Jeans", "Bottoms", "General", 6),
    ("Fine gauge", "Tops", "General Petite", 5),
    ("Skirts", "Bottoms", "General", 5),
    ("Jackets", "Jackets", "General", 4),
    ("Lounge", "Intimate", "Initmates", 3),
    ("Swim", "Intimate", "Initmates", 2),
    ("Casual bottoms", "Bottoms", "General", 0.5),
]
ITEM = {
    "Dresses": "dress",
    "Knits": "top",
    "Blouses": "blouse",
    "Sweaters": "sweater",
    "Pants": "pants",
    "Jeans": "jeans",
    "Fine gauge": "cardigan",
    "Skirts": "skirt",
    "Jackets": "jacket",
    "Lounge": "lounge set",
    "Swim": "swimsuit",
    "Casual bottoms": "shorts",
}
# Star ratings weighted like the course data (1★ 4 %, 2★ 7 %, 3★ 12 %, 4★ 22 %, 5★ 56 %).
RATING_WEIGHTS = [4, 7, 12, 22, 56]

POSITIVE = [
    "I love this {item}!",
    "Absolutely gorgeous {item}, the {part} is perfect.",
    "Fits true to size and feels so soft.",
    "The color is even prettier in person.",
    "I get compliments every time I wear it.",
    "It was not as small as I feared, the fit is great.",
    "Could not be happier with this purchase.",
    "Flattering on my {shape} frame and very comfortable.",
    "Great quality for the price.",
    "I bought it in two colors because it is that good.",
    "The fabric drapes beautifully.",
]
NEGATIVE = [
    "Very disappointed with this {item}.",
    "The {part} was way too tight and the fabric felt cheap.",
    "It is not flattering at all on my {shape} frame.",
    "Returned it the same day.",
    "The color looked nothing like the picture.",
    "It fell apart after one wash.",
    "Runs two sizes small and the seams were crooked.",
    "I would not recommend this to anyone.",
    "Itchy, see-through and not worth the price.",
    "Sadly this {item} is going back.",
]
NEUTRAL = [
    "The {item} is okay but nothing special.",
    "Nice color, but the {part} runs a bit large.",
    "I like the fabric, not so sure about the cut.",
    "It is fine for the price, I might keep it.",
    "Looks better on the model than on me, though the quality is decent.",
    "Not bad, not great; the {part} is a little boxy.",
    "I had to size down, and it is still a bit loose.",
    "Comfortable but it wrinkles easily.",
    "Pretty enough, but not what I expected from the photos.",
]
PARTS = ["waist", "neckline", "length", "hem", "sleeves", "fit through the hips", "shoulders"]
SHAPES = ["petite", "curvy", "tall", "athletic", "pear-shaped", "slim"]
TITLES = {
    1: ["Disappointed", "Returned", "Not for me"],
    2: ["Meh", "Runs small", "Not as pictured"],
    3: ["Okay", "Mixed feelings", "Almost"],
    4: ["Pretty", "Nice", "Very cute"],
    5: ["Love it!", "Perfect", "Beautiful"],
}


def _sentence_pool(rating: int) -> list[str]:
    if rating <= 2:
        return NEGATIVE
    if rating == 3:
        return NEUTRAL
    return POSITIVE


def _review(rng: random.Random, rating: int, item: str) -> str:
    pool = _sentence_pool(rating)
    n = rng.choice([1, 2, 2, 3, 3, 4])
    sentences = rng.sample(pool, k=min(n, len(pool)))
    if rating in (2, 4) and rng.random() < 0.35:  # a dissenting aside, as real 2★ and 4★ reviews often have
        sentences.append(rng.choice(NEUTRAL))
    return " ".join(s.format(item=item, part=rng.choice(PARTS), shape=rng.choice(SHAPES)) for s in sentences)


def generate_reviews(rows: int = 2000, seed: int = 7) -> list[dict[str, object]]:
    """Synthetic reviews as dicts keyed by the course CSV's columns; same ``rows`` and ``seed``, same data."""
    rng = random.Random(seed)
    weights = [c[3] for c in CATEGORIES]
    out: list[dict[str, object]] = []
    rare_left = 5  # the rare category gets a handful of rows, fewer than --min-facet-rows
    for i in range(rows):
        name, department, division, _ = rng.choices(CATEGORIES, weights=weights)[0]
        if name == "Casual bottoms":
            if rare_left <= 0:
                name, department, division, _ = CATEGORIES[0]
            rare_left -= 1
        rating = rng.choices(range(1, 6), weights=RATING_WEIGHTS)[0]
        text = "" if rng.random() < 0.03 else _review(rng, rating, ITEM[name])
        out.append(
            {
                "": i,
                "Clothing ID": 1000 + rng.randrange(200),
                "Age": rng.randint(18, 80),
                "Title": rng.choice(TITLES[rating]) if rng.random() < 0.85 else "",
                "Review Text": text,
                "Rating": rating,
                "Recommended IND": int(rating >= 4 or rng.random() < 0.1),
                "Positive Feedback Count": int(rng.expovariate(0.4)),
                "Division Name": division,
                "Department Name": department,
                "Class Name": name,
            }
        )
    return out


def write_sample_csv(path: str | Path, rows: int = 2000, seed: int = 7) -> Path:
    """Write the synthetic reviews as a CSV in the course's schema and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(generate_reviews(rows, seed))
    return path
