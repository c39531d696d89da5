"""summary.json (DESIGN §4) built from the pipeline's outputs as kfp.local hands them over: one artifact of JSON
per step and the deployment's returned JSON text."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kfp import dsl

from pipelines import summary

REPORTS = {
    "data_report": {"rows_in": 120, "rows_out": 90, "class_counts": {"negative": 30, "neutral": 30, "positive": 30}},
    "bias_report": {
        "label": "sentiment",
        "group": True,
        "rows": 118,
        "facet_rows": {"Dresses": 60, "Knits": 58},
        "metrics": {"Dresses": {"CI": 0.02, "DPL": -0.1}, "Knits": {"CI": -0.02, "DPL": 0.1}},
    },
    "features_report": {"rows": {"train": 80, "validation": 5, "test": 5}, "max_seq_length": 64},
    "feature_store_report": {"feature_view": "review_bert_features", "rows_written": 90},
    "tuning_report": {"trials": 0},
    "training_report": {"eval_accuracy": 0.7},
    "evaluation_report": {"accuracy": 0.8, "f1_macro": 0.79},
}
DEPLOYMENT = {"decision": "skipped", "reason": "below the floor", "model_version": "3"}
#: The steps' HTML outputs beside their reports (kfp.local names the files after the outputs: no extension).
HTML = {
    "bias_report": "report_html",
    "tuning_report": "report_html",
    "training_report": "curve_html",
    "evaluation_report": "report_html",
}


@pytest.fixture()
def outputs(tmp_path: Path) -> dict[str, object]:
    found: dict[str, object] = {"deployment": json.dumps(DEPLOYMENT)}
    for name, report in REPORTS.items():
        artifact = dsl.Artifact(uri=str(tmp_path / "artifacts" / name / "report"))
        Path(artifact.path).parent.mkdir(parents=True)
        Path(artifact.path).write_text(json.dumps(report))
        if name in HTML:
            Path(artifact.path).with_name(HTML[name]).write_text(f"<!doctype html><title>{name}</title>")
        found[name] = artifact
    return found


def test_summary_holds_every_steps_report_under_the_designs_keys(tmp_path: Path, outputs: dict) -> None:
    arguments = {"facet_column": "Class Name", "group_column": "Age", "seed": 42}
    built = summary.build_summary(arguments, tmp_path, outputs, started=time.time() - 5)
    assert list(built) == [
        "status",
        "finished_at",
        "duration_s",
        "output_dir",
        "parameters",
        "data",
        "bias",
        "features",
        "feature_store",
        "tuning",
        "training",
        "evaluation",
        "deployment",
    ]
    assert built["status"] == "succeeded" and 5 <= built["duration_s"] < 60
    assert built["output_dir"] == str(tmp_path.resolve()) and built["parameters"] == arguments
    reports = (tmp_path / "reports").resolve()
    assert built["data"] == REPORTS["data_report"]
    assert built["evaluation"] == {**REPORTS["evaluation_report"], "report_html": str(reports / "evaluation.html")}
    assert built["deployment"] == DEPLOYMENT
    assert built["bias"] == {
        "facet": "Class Name",
        "label": "sentiment",
        "positive_label": "positive",
        "positive_label_value": 1,
        "group": "Age",
        "rows": 118,
        "facet_rows": {"Dresses": 60, "Knits": 58},
        "metrics": REPORTS["bias_report"]["metrics"],
        "report_html": str(reports / "bias.html"),
    }
    assert built["tuning"]["report_html"] == str(reports / "tuning.html")
    assert built["training"]["curve_html"] == str(reports / "training.html")
    # Copies with an .html name (a browser renders them), of the steps' own pages.
    for part, name, output in (("bias", "bias", "bias_report"), ("training", "training", "training_report")):
        copy = reports / f"{name}.html"
        assert built[part][HTML[output]] == str(copy)
        assert copy.read_text() == f"<!doctype html><title>{output}</title>"
    path = summary.write_summary(tmp_path, built)
    assert path == tmp_path / "summary.json" and json.loads(path.read_text())["bias"]["group"] == "Age"


def test_bias_group_is_false_when_the_check_had_no_group(tmp_path: Path, outputs: dict) -> None:
    Path(outputs["bias_report"].path).write_text(json.dumps({**REPORTS["bias_report"], "group": False}))
    built = summary.build_summary({"facet_column": "Class Name", "group_column": ""}, tmp_path, outputs, time.time())
    assert built["bias"]["group"] is False


def test_a_run_that_did_not_succeed_says_why() -> None:
    ended = summary.ended("failed", "ValueError: no rows", {"seed": 1}, Path("runs/x"))
    assert ended == {
        "status": "failed",
        "error": "ValueError: no rows",
        "output_dir": str(Path("runs/x").resolve()),
        "parameters": {"seed": 1},
    }
