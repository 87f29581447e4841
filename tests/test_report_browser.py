"""The HTML report in a real headless browser: loads with no console error, no network, every image rendered."""

import pytest
import yaml

from backdoorlab.cli import main

from .browser import check_page, chromium_path


@pytest.mark.slow
@pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (make test installs it with apt)")
def test_report_renders_in_chromium(tmp_path):
    pytest.importorskip("websocket")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "browser",
                "dataset": "digits",
                "training": {"epochs": 2, "lr": 0.003, "batch_size": 64, "augment_shift": 0},
                "attacks": [{"name": "badnets", "size": 2}],
                "seeds": [0],
                "examples": 3,
            }
        )
    )
    assert main(["run", str(cfg), "-o", str(tmp_path / "runs"), "--run-name", "b", "-q"]) == 0
    page = check_page(tmp_path / "runs" / "b" / "report.html")
    assert page.title == "backdoorlab run b"
    assert page.errors == [] and page.requests == []
    assert len(page.images) >= 1 and all(img["ok"] and img["width"] > 100 for img in page.images)
