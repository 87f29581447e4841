"""The report's tables: DER and RIR for repair cells (stored or computed), the matrix coloured by DER, and the
detection table's optional columns."""

import pytest

from backdoorlab.experiments.store import ResultRow
from backdoorlab.report.tables import (
    Table,
    der_style,
    detection_table,
    main_table,
    matrix_table,
    other_metrics_table,
    stealth_table,
    with_repair_rates,
)


def rows_of(cells):
    return [ResultRow("r", "mnist5k", "cnn", a, d, s, k, v) for a, d, s, m in cells for k, v in m.items()]


UNDEFENDED = [
    ("none", "none", 0, {"clean_accuracy": 0.99}),
    ("badnets", "none", 0, {"clean_accuracy": 0.98, "asr": 1.0, "robust_accuracy": 0.0}),
    ("blend", "none", 0, {"clean_accuracy": 0.97, "asr": 0.95}),
]
REPAIRED = [
    ("none", "fp", 0, {"clean_accuracy": 0.985}),
    # DER (0.99 - 0.01 + 1) / 2 = 0.99; RIR (0.9 - 0.01 + 1) / 2 = 0.945
    ("badnets", "fp", 0, {"clean_accuracy": 0.97, "asr": 0.01, "robust_accuracy": 0.9}),
    ("blend", "fp", 0, {"clean_accuracy": 0.96, "asr": 0.60}),  # DER (0.35 - 0.01 + 1) / 2 = 0.67; no RA: no RIR
]


def test_with_repair_rates_computes_only_what_is_missing():
    added = with_repair_rates(rows_of(UNDEFENDED + REPAIRED))[len(rows_of(UNDEFENDED + REPAIRED)) :]
    got = {(r.attack, r.defense, r.metric): r.value for r in added}
    assert got == {
        ("badnets", "fp", "der"): pytest.approx(0.99),
        ("badnets", "fp", "rir"): pytest.approx(0.945),
        ("blend", "fp", "der"): pytest.approx(0.67),
    }
    stored = rows_of(UNDEFENDED + [("badnets", "fp", 0, {"clean_accuracy": 0.97, "asr": 0.01, "der": 0.5})])
    assert [r.metric for r in with_repair_rates(stored)[len(stored) :]] == []  # stored der kept, no RA for RIR
    other_seed = rows_of(UNDEFENDED + [("badnets", "fp", 1, {"clean_accuracy": 0.97, "asr": 0.01})])
    assert with_repair_rates(other_seed) == other_seed  # no undefended cell of seed 1


def test_der_style_runs_red_to_green():
    assert der_style(0.3) == der_style(0.5) == "background:hsl(0,70%,80%)"
    assert der_style(0.75) == "background:hsl(60,70%,80%)"
    assert der_style(0.99) == "background:hsl(118,70%,80%)"  # 120 * 0.98 = 117.6
    assert der_style(float("nan")) == ""


def test_matrix_shows_der_beside_ca_asr_and_colours_repairs():
    table = matrix_table(rows_of(UNDEFENDED + REPAIRED))
    assert table.headers == ["dataset", "model", "attack", "none: CA / ASR", "fp: CA / ASR (DER)"]
    assert table.rows == [
        ["mnist5k", "cnn", "none", "99.0 / –", "98.5 / –"],
        ["mnist5k", "cnn", "badnets", "98.0 / 100.0", "97.0 / 1.0 (DER 99.0)"],
        ["mnist5k", "cnn", "blend", "97.0 / 95.0", "96.0 / 60.0 (DER 67.0)"],
    ]
    assert table.styles[1] == ["", "", "", "", "background:hsl(118,70%,80%)"]
    assert table.styles[2][4] == "background:hsl(41,70%,80%)"  # 120 * 0.34 = 40.8
    page = table.html()
    assert '<td style="background:hsl(118,70%,80%)">97.0 / 1.0 (DER 99.0)</td>' in page
    assert "<td>98.0 / 100.0</td>" in page
    assert "| mnist5k | cnn | badnets | 98.0 / 100.0 | 97.0 / 1.0 (DER 99.0) |" in table.markdown()


def test_matrix_uses_stored_der_rows():
    cells = UNDEFENDED[:2] + [("badnets", "fp", 0, {"clean_accuracy": 0.97, "asr": 0.01, "der": 0.8})]
    assert matrix_table(rows_of(cells)).rows[1][-1] == "97.0 / 1.0 (DER 80.0)"


def test_table_html_without_styles_is_unchanged():
    assert (
        Table(["a"], [["<1>"]]).html()
        == "<table><thead><tr><th>a</th></tr></thead><tbody><tr><td>&lt;1&gt;</td></tr></tbody></table>"
    )


def test_main_table_adds_der_and_rir_columns_only_for_repairs():
    assert main_table(rows_of(UNDEFENDED)).headers[-1] == "trigger on clean model (%)"
    table = main_table(rows_of(UNDEFENDED + REPAIRED))
    assert table.headers[-2:] == ["DER (%)", "RIR (%)"]
    assert table.rows[4][-2:] == ["99.0", "94.5"] and table.rows[5][-2:] == ["67.0", "–"]
    assert other_metrics_table(rows_of(UNDEFENDED + REPAIRED)).rows == []


def test_detection_table_gains_pr_auc_and_tpr_at_fpr_where_rows_exist():
    old = [("badnets", "strip", 0, {"fpr": 0.02, "threshold": 0.1, "tpr": 0.9, "roc_auc": 0.97})]
    assert detection_table(rows_of(old)).headers[4:] == [
        "detection rate (TPR) (%)",
        "false positives (FPR / FRR) (%)",
        "ROC-AUC (%)",
    ]
    new = old + [
        ("blend", "strip", 0, {"fpr": 0.01, "threshold": 0.1, "tpr": 0.5, "pr_auc": 0.8, "tpr_at_1pct_fpr": 0.3})
    ]
    table = detection_table(rows_of(new))
    assert table.headers[7:] == ["PR-AUC (%)", "TPR at 1% FPR (%)"]  # no tpr_at_5pct_fpr row anywhere
    assert table.rows == [
        ["mnist5k", "cnn", "badnets", "strip", "90.0", "2.0", "97.0", "–", "–"],
        ["mnist5k", "cnn", "blend", "strip", "50.0", "1.0", "–", "80.0", "30.0"],
    ]


def test_stealth_table_has_one_line_per_attack_with_a_trigger():
    stealthy = {"stealth_psnr": 30.0, "stealth_ssim": 0.9, "stealth_linf": 0.2, "stealth_l2": 1.5}
    cells = UNDEFENDED + [
        ("wanet", "none", 0, {"clean_accuracy": 0.98, "asr": 0.9, **stealthy}),
        ("wanet", "none", 1, {"clean_accuracy": 0.98, "asr": 0.9, **stealthy, "stealth_psnr": 32.0}),
        ("wanet", "fp", 0, {"clean_accuracy": 0.97, "stealth_psnr": 99.0}),  # a defense cell: not an attack's line
    ]
    table = stealth_table(rows_of(cells))
    assert table.headers == ["dataset", "model", "attack", "PSNR (dB)", "SSIM", "L∞", "L2"]
    assert len(table.rows) == 1 and table.rows[0][:3] == ["mnist5k", "cnn", "wanet"]
    assert table.rows[0][3].startswith("31 ± ") and table.rows[0][4:] == ["0.9", "0.2", "1.5"]
