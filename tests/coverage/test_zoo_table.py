"""The COVERAGE.md zoo models table: rendered per model × stage, replaced in place, the rest of the file kept."""

from __future__ import annotations

from harmonizer_deploy.coverage.zoo import STAGES, ZOO, ZOO_BEGIN, ZOO_END, render_zoo_table, write_zoo_section


def _row(model: str, failed_at: str | None = None) -> dict:
    row = {"model": model, "fix_dims": {"batch": 2}, "first_error": ""}
    status = "pass"
    for stage in STAGES:
        row[stage] = status if stage != failed_at else "fail"
        if stage == failed_at:
            row["first_error"] = f"{stage}: TVM cannot import node x (Loop) | a pipe"
            status = "not run"
    return row


def test_zoo_has_the_ten_kinds_of_model_the_issue_lists():
    assert len(ZOO) >= 10
    assert {"gru", "lstm", "bidirectional_gru", "attention_block", "causal_conv1d", "embedding",
            "two_inputs_two_outputs", "fixed_reshape", "dilated_separable_conv2d", "custom_roll_cumsum"} <= set(ZOO)


def test_table_rows_and_escaped_error():
    text = render_zoo_table([_row("gru"), _row("bidirectional_gru", "compile cpu")])
    lines = [ln for ln in text.splitlines() if ln.startswith("| gru") or ln.startswith("| bidirectional")]
    assert lines[0] == "| gru | pass | pass | pass | pass | pass | batch=2 | – |"
    assert "| pass | pass | fail | not run | not run |" in lines[1] and "\\| a pipe" in lines[1]


def test_section_is_replaced_and_the_rest_kept(tmp_path):
    md = tmp_path / "COVERAGE.md"
    md.write_text("# ops\n\nop table\n")
    write_zoo_section(md, [_row("gru", "verify cpu")])
    write_zoo_section(md, [_row("gru")])
    text = md.read_text()
    assert text.startswith("# ops\n\nop table\n") and text.count(ZOO_BEGIN) == 1 and text.count(ZOO_END) == 1
    assert "fail" not in text.split(ZOO_BEGIN)[1]


def test_op_report_rerun_keeps_the_zoo_section(tmp_path):
    from harmonizer_deploy.coverage.report import zoo_section

    md = tmp_path / "COVERAGE.md"
    assert zoo_section(md) == ""
    write_zoo_section(md, [_row("gru")])
    kept = zoo_section(md)
    assert kept.strip().startswith(ZOO_BEGIN) and kept.strip().endswith(ZOO_END) and "| gru |" in kept


def test_coverage_classes_keeps_the_zoo_section(tmp_path, monkeypatch):
    """`coverage-classes` rewrites COVERAGE.md from coverage.json: the zoo table (not in coverage.json) stays."""
    import shutil
    from pathlib import Path

    from harmonizer_deploy.coverage import tracker
    from harmonizer_deploy.coverage.classes import write_table

    monkeypatch.setattr(tracker, "collect_cases", lambda *a, **k: [])  # no node-suite scan: the table is empty
    report = tmp_path / "coverage.json"
    shutil.copyfile(Path(__file__).resolve().parents[2] / "coverage.json", report)  # the committed report
    md = tmp_path / "COVERAGE.md"
    write_zoo_section(md, [_row("gru")])
    write_table(report, [], tmp_path / "classes.json")
    text = md.read_text()
    assert "| gru |" in text and ZOO_BEGIN in text and "Headline" in text
