"""`rtdeep demo` (the README's first command) runs every step and writes what it promises."""

from __future__ import annotations

import json
from pathlib import Path

from rtdeep.cli import main
from rtdeep.dicomrt.validate import check_rtstruct
from rtdeep.model_database import default_model


def test_demo_on_the_small_grid_writes_every_output(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--small", "--out", str(out)]) == 0
    study = next((out / "patient").glob("RTD-THX-*"))
    ai_rtstruct = out / "ai_contours" / f"RS.{default_model('thorax')}.dcm"  # the demo's model: models.json decides
    errors = [f for f in check_rtstruct(ai_rtstruct, study / "CT") if f.severity == "error"]
    assert errors == []
    metrics = (out / "review" / "metrics.csv").read_text()
    assert "Lung_L" in metrics and "Heart" in metrics
    assert (out / "dvh" / "dvh.png").stat().st_size > 0
    assert any((out / "crop").rglob("*.mat"))
    risk = json.loads((out / "pneumonitis" / "risk.json").read_text())
    assert 0.0 <= risk["risk_pct"] <= 100.0
    assert risk["positive_class"] == "grade >= 2 radiation pneumonitis"
    assert "Demo finished" in capsys.readouterr().out


def test_demo_refuses_a_non_empty_output_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("user data")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert (tmp_path / "keep.txt").read_text() == "user data"
