"""bench tune: the benchmark's own code path (four studies through the tune step's Optuna engine, the
summaries and the pruning figures) on a tiny random BERT and synthetic reviews, a few steps per trial."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bench import tune
from tests import testing


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench-tune")
    tiny = testing.tiny_model(root / "tiny", dropout=0.0)
    texts, labels, facets = testing.synthetic_reviews(150, seed=3)
    frame = testing.features(texts, labels, 24, facets=facets).assign(split=["train"] * 120 + ["validation"] * 30)
    data = tune.subset(frame, 60, seed=1)
    data.to_parquet(root / "features.parquet", index=False)
    return root / "features.parquet", tiny


def test_subset_is_stratified_and_keeps_the_whole_validation_split() -> None:
    frame = pd.DataFrame(
        {"label_id": [0, 1, 2] * 20, "split": ["train"] * 45 + ["validation"] * 15, "review_id": range(60)}
    )
    data = tune.subset(frame, 9, seed=0)
    train = data[data["split"] == "train"]
    assert train["label_id"].value_counts().to_dict() == {0: 3, 1: 3, 2: 3}
    assert (data["split"] == "validation").sum() == 15
    smaller = tune.subset(frame, 9, seed=0, validation_rows=6)
    assert smaller[smaller["split"] == "validation"]["label_id"].value_counts().to_dict() == {0: 2, 1: 2, 2: 2}


def test_spec_is_read_by_the_tune_step() -> None:
    from components.tune import spec_loading

    search = tune.Search(trials=5, n_startup_trials=2, min_trials_required=2, start_step=1)
    tpe = spec_loading.load_spec(search.spec("tpe", True))
    assert (tpe.algorithm, tpe.max_trial_count, tpe.algorithm_settings) == ("tpe", 5, {"n_startup_trials": "2"})
    assert tpe.early_stopping is not None and tpe.early_stopping.min_trials_required == 2
    random = spec_loading.load_spec(search.spec("random", False))
    assert random.early_stopping is None and random.algorithm_settings == {}
    assert [p.name for p in random.parameters] == ["learning_rate", "per_device_train_batch_size"]


@pytest.mark.slow  # four real studies of training processes: minutes on 2 cores
def test_compare_runs_real_studies_through_the_tune_step(features: tuple[Path, Path], tmp_path: Path) -> None:
    path, tiny = features
    # TPE (one random start), 2 trials per study, 4 steps each; the median rule may stop the second trial from
    # its first evaluation (learning rates up to --learning-rate's bound, 1e-2, make poor trials likely).  The
    # benchmark runs random too, through the same code; one sampler keeps this test to four training processes.
    search = tune.Search(
        trials=2, max_steps=4, eval_steps=2, lr_min=1e-4, lr_max=1e-2, n_startup_trials=1,
        min_trials_required=1, start_step=1, seed=5,
    )  # fmt: skip
    found = tune.compare(path, str(tiny), 24, search, tmp_path, samplers=("tpe",))
    studies = found["studies"]
    assert set(studies) == {"tpe-no-pruning", "tpe-medianstop"}
    for name, s in studies.items():
        assert [c["trial"] for c in s["curve"]] == [0, 1], name
        assert s["counts"]["fail"] == 0, name
        bests = [c["best_so_far"] for c in s["curve"] if c["best_so_far"] is not None]
        assert bests == sorted(bests) and bests[-1] == s["best_value"], name
        assert 0.0 <= s["best_value"] <= 1.0
        assert [c["minutes"] for c in s["curve"]] == sorted(c["minutes"] for c in s["curve"])
        assert s["curve"][0]["evaluations"] == 2  # steps 2 and 4
    assert studies["tpe-no-pruning"]["counts"]["pruned"] == 0
    # one seed: the first (random) draw is the same with and without the median rule
    first = {n: (s["curve"][0]["learning_rate"], s["curve"][0]["batch_size"]) for n, s in studies.items()}
    assert first["tpe-no-pruning"] == first["tpe-medianstop"]
    effect = found["pruning"]["tpe"]
    assert effect["pruned"] == studies["tpe-medianstop"]["counts"]["pruned"]
    assert effect["minutes_saved"] == pytest.approx(effect["minutes_off"] - effect["minutes_on"], abs=0.011)


def test_pruning_effect() -> None:
    off = {"minutes": 10.0, "best_value": 0.6, "counts": {"pruned": 0}}
    on = {"minutes": 7.5, "best_value": 0.55, "counts": {"pruned": 2}}
    effect = tune.pruning_effect(off, on)
    assert effect == {
        "pruned": 2, "minutes_off": 10.0, "minutes_on": 7.5, "minutes_saved": 2.5, "share_saved": 0.25,
        "best_off": 0.6, "best_on": 0.55, "best_lost": 0.05,
    }  # fmt: skip


def test_main_needs_the_course_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REVIEWS_CSV", raising=False)
    with pytest.raises(SystemExit, match="REVIEWS_CSV"):
        tune.main(["--trials", "2"])
