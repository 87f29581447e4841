"""The report's findings in sentences, from hand-made result rows."""

from backdoorlab.experiments.store import ResultRow
from backdoorlab.report import findings as f


def rows_of(cells, dataset="mnist5k", model="cnn"):
    """ResultRows from (attack, defense, seed, {metric: value}) cells."""
    return [ResultRow("r", dataset, model, a, d, s, k, v) for a, d, s, m in cells for k, v in m.items()]


CELLS = [
    ("none", "none", 0, {"clean_accuracy": 0.99}),
    ("badnets", "none", 0, {"clean_accuracy": 0.98, "asr": 1.0}),
    ("badnets", "none", 1, {"clean_accuracy": 0.98, "asr": 0.96}),
    ("blend", "none", 0, {"clean_accuracy": 0.97, "asr": 0.95}),
    # seed 0: DER (0.99 - 0.005 + 1) / 2 = 0.9925; seed 1: (0.93 - 0.015 + 1) / 2 = 0.9575; mean 0.975
    ("badnets", "fine_pruning", 0, {"clean_accuracy": 0.975, "asr": 0.01}),
    ("badnets", "fine_pruning", 1, {"clean_accuracy": 0.965, "asr": 0.03}),
    ("blend", "fine_pruning", 0, {"clean_accuracy": 0.96, "asr": 0.60}),  # DER (0.35 - 0.01 + 1) / 2 = 0.67
    # a stored DER row wins over the computed one ((0.95 - 0.08 + 1) / 2 = 0.935); seed 0 only, so ASR before 100%
    ("badnets", "pruning", 0, {"clean_accuracy": 0.90, "asr": 0.05, "der": 0.9}),
    ("none", "strip", 0, {"fpr": 0.02, "threshold": 0.1}),
    ("badnets", "strip", 0, {"fpr": 0.02, "threshold": 0.1, "tpr": 0.95, "roc_auc": 0.99}),
    ("blend", "strip", 0, {"fpr": 0.01, "threshold": 0.1, "tpr": 0.40, "roc_auc": 0.93}),
    ("none", "nc", 0, {"flagged": 0.0}),
    ("none", "nc", 1, {"flagged": 0.0}),
    ("badnets", "nc", 0, {"flagged": 1.0, "target_flagged": 1.0}),
    ("badnets", "nc", 1, {"flagged": 1.0, "target_flagged": 0.0}),
    ("blend", "nc", 0, {"flagged": 0.0, "target_flagged": 0.0}),
    ("none", "di", 0, {"flagged": 1.0}),
    ("badnets", "di", 0, {"flagged": 1.0}),
]


def test_findings_name_who_removed_caught_flagged_and_where_all_failed():
    assert f.findings(rows_of(CELLS)) == [
        "Repair fine_pruning removed the backdoor of badnets (ASR 98.0% → 2.0%, CA 98.0% → 97.0%, DER 97.5%); "
        "it did not remove that of blend (ASR 95.0% → 60.0%, CA 97.0% → 96.0%, DER 67.0%).",
        "Repair pruning removed no backdoor: badnets (clean accuracy fell 8.0 points; ASR 100.0% → 5.0%, "
        "CA 98.0% → 90.0%, DER 90.0%).",
        "Input detector strip caught the trigger of badnets (detection rate 95.0% at 2.0% false positives, "
        "ROC-AUC 0.99); it missed blend (ROC-AUC 0.93, but its calibrated threshold detects only 40.0% at 1.0% "
        "false positives).",
        "Inspector nc flagged the backdoored models of badnets (2 of 2 models flagged, the true target among the "
        "flagged labels in 1); it did not single out blend (0 of 1 model flagged). It falsely flagged 0 of 2 clean "
        "models.",
        "Inspector di singled out no backdoor: badnets (1 of 1 model flagged, but also 1 of 1 clean). It falsely "
        "flagged 1 of 1 clean model.",
        "Every defense failed against blend: fine_pruning (DER 67.0%, ASR left 60.0%, CA 97.0% → 96.0%), strip "
        "(ROC-AUC 0.93, detection rate 40.0%) and nc (flagged 0 of 1).",
    ]


def test_repair_thresholds_at_their_edges():
    def judged(ca_after, asr_after):
        cells = [
            ("badnets", "none", 0, {"clean_accuracy": 0.95, "asr": 1.0}),
            ("badnets", "ft", 0, {"clean_accuracy": ca_after, "asr": asr_after}),
        ]
        (j,) = f.repair_judgements(rows_of(cells))
        return j

    # CA drop of exactly 2 points and ASR 9.9%: DER (0.901 - 0.02 + 1) / 2 = 0.9405, removed
    assert judged(0.93, 0.099).success
    assert not judged(0.93, 0.10).success  # ASR left must be below 10%
    j = judged(0.929, 0.0)  # 2.1 points lost
    assert not j.success and j.clause.startswith("badnets (clean accuracy fell 2.1 points;")
    # ASR before only 0.15: (0.15 - 0 + 1) / 2 = 0.575, below REMOVED_MIN_DER though ASR and CA are fine
    weak = [
        ("badnets", "none", 0, {"clean_accuracy": 0.95, "asr": 0.15}),
        ("badnets", "ft", 0, {"clean_accuracy": 0.95, "asr": 0.0}),
    ]
    (j,) = f.repair_judgements(rows_of(weak))
    assert not j.success and j.clause == "badnets (DER only 57.5%; ASR 15.0% → 0.0%, CA 95.0% → 95.0%, DER 57.5%)"


def test_repair_without_undefended_cell_or_on_clean_model_is_not_judged():
    cells = [
        ("none", "none", 0, {"clean_accuracy": 0.99}),
        ("none", "ft", 0, {"clean_accuracy": 0.98}),
        ("badnets", "ft", 0, {"clean_accuracy": 0.98, "asr": 0.0}),  # no badnets/none cell
        ("blend", "none", 1, {"clean_accuracy": 0.98, "asr": 0.9}),
        ("blend", "ft", 0, {"clean_accuracy": 0.98, "asr": 0.0}),  # seeds do not meet
    ]
    assert f.repair_judgements(rows_of(cells)) == []
    assert f.findings(rows_of(cells)) == []
    assert f.findings_sections(rows_of(cells)) == []


def test_detector_nan_auc_and_nan_seeds():
    cells = [
        ("badnets", "fs", 0, {"fpr": 0.05, "threshold": 0.3, "tpr": 0.92, "roc_auc": float("nan")}),
        ("badnets", "fs", 1, {"fpr": 0.05, "threshold": 0.3, "tpr": float("nan")}),  # NaN seeds are left out
    ]
    (j,) = f.detector_judgements(rows_of(cells))
    assert j.success and j.clause == "badnets (detection rate 92.0% at 5.0% false positives, ROC-AUC –)"


def test_settings_are_named_when_there_are_several():
    cells = [
        ("badnets", "none", 0, {"clean_accuracy": 0.9, "asr": 1.0}),
        ("badnets", "ft", 0, {"clean_accuracy": 0.9, "asr": 0.9}),  # DER 0.55
    ]
    rows = rows_of(cells) + rows_of(cells, dataset="digits", model="mlp")
    assert f.findings(rows)[0] == (
        "Repair ft on mnist5k, cnn removed no backdoor: badnets (ASR 100.0% → 90.0%, CA 90.0% → 90.0%, DER 55.0%)."
    )
    assert f.findings(rows)[-1] == (
        "Every defense failed against badnets on digits, mlp: ft (DER 55.0%, ASR left 90.0%, CA 90.0% → 90.0%)."
    )
    assert len(f.findings(rows)) == 4


def test_population_summary_and_clean_only_inspector():
    summary = {
        "tpr": 0.8,
        "fpr": 0.2,
        "roc_auc": 0.9,
        "pr_auc": 0.85,
        "fpr_at_95pct_tpr": 0.4,
        "n_clean": 5.0,
        "n_backdoored": 5.0,
    }
    cells = [("population:badnets", "nc", -1, summary), ("none", "nc", 0, {"flagged": 1.0})]
    assert f.findings(rows_of(cells)) == [
        "Inspector nc: it falsely flagged 1 of 1 clean model.",
        "Over a population of 5 clean and 5 backdoored models (badnets), inspector nc flagged 80.0% of the "
        "backdoored and 20.0% of the clean models (ROC-AUC 0.90, PR-AUC 0.85, FPR at 95% TPR 40.0%).",
    ]
    assert f.detector_judgements(rows_of(cells)) == []  # population rows carry fpr and tpr, but are no detector


def test_findings_section_states_its_thresholds():
    (section,) = f.findings_sections(rows_of(CELLS))
    assert section.title == "Findings" and len(section.paragraphs) == 7
    assert section.paragraphs[-1].startswith(
        "A repair removed a backdoor when DER ≥ 90%, the ASR left < 10% and clean accuracy fell by at most 2 points; "
        "a detector caught a trigger when ROC-AUC ≥ 0.90 and its calibrated threshold detected ≥ 90%"
    )
