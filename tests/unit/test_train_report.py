"""components.train.report: the training curve page and the step's Markdown summary, from a training report."""

from __future__ import annotations

import json
import math
from pathlib import Path
from xml.etree import ElementTree

from components.train import report

HISTORY = [
    {"step": 9, "epoch": 1.0, "train_loss": 1.0931, "eval_loss": 1.0412, "eval_accuracy": 0.5, "eval_f1_macro": 0.41},
    {"step": 18, "epoch": 2.0, "train_loss": 0.8123, "eval_loss": 0.7011, "eval_accuracy": 0.75, "eval_f1_macro": 0.7},
    {"step": 27, "epoch": 3.0, "train_loss": math.nan, "eval_loss": 0.5, "eval_accuracy": 1.0, "eval_f1_macro": 1.0},
]
REPORT = {
    "base_model": "/home/me/models/<tiny>/model",
    "global_step": 27,
    "total_steps": 27,
    "epochs_completed": 3.0,
    "stop_reason": "completed",
    "best_step": 27,
    "metric_for_best_model": "eval_f1_macro",
    "device": "cpu",
    "precision": "fp32",
    "train_rows": 216,
    "validation_rows": 12,
    "history": HISTORY,
    "metrics": {"eval_accuracy": 1.0, "eval_f1_macro": 1.0, "eval_loss": 0.5, "health_overfitting": 0.0},
}


def test_the_curve_has_every_point_of_the_history(tmp_path: Path) -> None:
    (tmp_path / "report").write_text(json.dumps(REPORT))  # (NaN as json writes it, as train's report does)
    report.write_outputs(tmp_path / "report", tmp_path / "curve", tmp_path / "summary")
    page = (tmp_path / "curve").read_text()
    assert page.startswith("<!doctype html>") and "&lt;tiny&gt;/model" in page and "<tiny>" not in page
    assert "/home/me" not in page  # the model directory's last parts, not the training machine's path
    svgs = [ElementTree.fromstring("<svg" + p.split("</svg>")[0] + "</svg>") for p in page.split("<svg")[1:]]
    assert len(svgs) == 2  # loss; accuracy and macro-F1
    points = {
        (c.get("data-x"), float(c.get("data-y")))
        for svg in svgs
        for c in svg.iter("{http://www.w3.org/2000/svg}circle")
    }
    expected = {
        (str(h["step"]), h[key])
        for h in HISTORY
        for key in ("train_loss", "eval_loss", "eval_accuracy", "eval_f1_macro")
        if not math.isnan(h[key])
    }
    assert points == expected  # 11: the NaN training loss (no training step since the last evaluation) left out
    summary = (tmp_path / "summary").read_text()
    assert summary.startswith("## Train\n") and "No health rule fired." in summary
    assert "| 18 | 0.8123 | 0.7011 | 0.75 | 0.7 |" in summary and "| 27 | — | 0.5 | 1 | 1 |" in summary
