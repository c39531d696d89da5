"""KFP component: pre-training bias of the sentiment label across facet values (Clarify metrics)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Output

from components.common.image import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
def check_bias(
    cleaned_reviews: Input[Dataset],
    max_abs_ci: float,
    max_abs_dpl: float,
    report_json: Output[Artifact],
    report_html: Output[HTML],
    metrics: Output[Metrics],
    summary_md: Output[Markdown],
) -> None:
    """Measure CI, DPL, KL, JS, LP, TVD, KS of each facet value against the rest.

    CDDL is added when prepare_reviews carried a group column along.

    Args:
        cleaned_reviews: Cleaned reviews (Parquet) before balancing, from prepare_reviews.
        max_abs_ci: Fail when a facet value's |CI| exceeds this (1.0: never).
        max_abs_dpl: Fail when a facet value's |DPL| exceeds this (1.0: never).
        report_json: Per-facet-value metrics, machine-readable.
        report_html: The same as a table and chart for the dashboard.
        metrics: Headline figures (largest |CI|, |DPL|) and the row count.
        summary_md: The headline figures and CI/DPL per facet value, for the dashboard.
    """
    from components.bias_check import core
    from components.common import report_md, schema

    group = schema.GROUP if schema.GROUP in core.columns_of(cleaned_reviews.path) else None
    gates = core.BiasGates(max_abs_ci=max_abs_ci, max_abs_dpl=max_abs_dpl)
    report = core.run(cleaned_reviews.path, schema.FACET, schema.LABEL, schema.POSITIVE_LABEL, group, gates)
    core.write_outputs(report, report_json.path, report_html.path)
    metrics.log_metric("rows", report.rows)
    for name, value in report.headline().items():
        metrics.log_metric(name, value)
    report_md.write(
        summary_md.path,
        "Bias check",
        {"rows": report.rows, **report.headline()},
        [f"{report.label} across {len(report.metrics)} {report.facet} values: the gate passed (see report_html)."],
        (
            ("facet value", "rows", "CI", "DPL"),
            [
                (v, report.facet_rows[v], report.metrics[v]["CI"], report.metrics[v]["DPL"])
                for v in sorted(report.metrics, key=lambda v: -report.facet_rows[v])
            ],
        ),
    )
