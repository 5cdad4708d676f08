"""The GPU checklist commands (benchmarks/gpu_checklist.py): they refuse to run without a GPU, and
their JSON/README path works (checked on the CPU with --smoke; the figures themselves need a GPU)."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu_checklist


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_commands_refuse_clearly():
    with pytest.raises(SystemExit, match="no CUDA device here"):
        gpu_checklist.main(["radiomics"])
    with pytest.raises(SystemExit, match="only with --smoke"):
        gpu_checklist.main(["rgt_step", "--device", "cpu"])


def test_radiomics_item_writes_its_numbers_device_commit_and_date(tmp_path):
    gpu_checklist.main(["radiomics", "--device", "cpu", "--smoke", "--out-dir", str(tmp_path)])
    rec = json.loads((tmp_path / "radiomics.json").read_text())
    assert rec["item"] == "radiomics" and rec["device"].startswith("CPU") and rec["smoke"]
    assert rec["commit"] and rec["date"][:4].isdigit()
    assert [b["rois"] for b in rec["results"]["per_batch"]] == [16, 32]
    assert all(b["ms"] > 0 for b in rec["results"]["per_batch"])
    assert rec["results"]["parity"]["all_within"]  # the CPU engine against itself: trivially equal here
    lines = (tmp_path / "README.md").read_text().splitlines()
    assert sum(ln.startswith("| radiomics |") for ln in lines) == 1


def test_a_rerun_replaces_the_items_line_and_keeps_the_others(tmp_path):
    class Args:
        device, smoke, out_dir = "cpu", True, str(tmp_path)

    gpu_checklist.record("rgt_step", {"x": 1}, "first", Args)
    gpu_checklist.record("radiomics", {"x": 2}, "other", Args)
    gpu_checklist.record("rgt_step", {"x": 3}, "second", Args)
    lines = (tmp_path / "README.md").read_text().splitlines()
    rows = [ln for ln in lines if ln.startswith("| rgt_step |")]
    assert len(rows) == 1 and rows[0].endswith("| second |")
    assert any(ln.startswith("| radiomics |") for ln in lines)
    assert json.loads((tmp_path / "rgt_step.json").read_text())["results"] == {"x": 3}
