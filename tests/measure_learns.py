"""The measurements behind every learns test's bound: each test over seeds and two CPU kernel families.

    python tests/measure_learns.py                      # every learns test, seeds 0 1 2, both kernel families
    python tests/measure_learns.py --tests amm --seeds 0 1 2 3 --kernels avx2
    python tests/measure_learns.py --broken             # seed 0, default kernels, the broken variant
    python tests/measure_learns.py --tests rgt_oracle --broken mechanism_off   # a test's own switch off

Each run is ``pytest TEST`` in its own process with CXRBENCH_LEARNS_SEED set (``conftest.Learns``), one
thread, and for the ``avx2`` family ``ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2``: on an AVX-512
machine that changes the convolution kernels, and their results bit for bit, as another CPU would. Two
runs at a time (this machine has 2 cores). Every run appends what its test measured to ``--out`` (JSON
lines), with whether the test passed; ``--table`` prints the markdown table kept in tests/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: short name -> pytest node id(s) run in one process (tests that share a trained fixture run together).
#: Every test here asserts that a method learns (a metric bound).
LEARNS = {
    "amm": "tests/test_amm.py::test_amm_learns_cardiomegaly_and_reports_where_w_points",
    # not a learns test (its docstring: a detached-loss RGT passes it); measured to show exactly that
    "rgt": "tests/test_rgt.py::test_rgt_trains_end_to_end_and_reports_its_boxes",
    "rgt_oracle": "tests/test_rgt.py::test_rgt_radiomics_branch_learns_from_oracle_boxes_not_from_the_wrong_images_boxes",
    "stn": "tests/test_stn.py::test_stn_learns_normal_vs_abnormal_past_a_shortcut_that_the_whole_image_takes",
    "camcontrast": ("tests/test_camcontrast.py::test_stage1_learns_the_coarse_label_and_scores_its_heatmaps_against_every_box",
                    "tests/test_camcontrast.py::test_stage2_loss_falls_on_the_exported_heatmaps"),
    "gmml": "tests/test_gmml.py::test_gmml_pretraining_loss_falls_and_fine_tuning_from_it_beats_from_scratch",
    "unetr": "tests/test_gmml.py::test_unetr_segments_the_twins_lungs_beyond_the_lung_prior",
    "unet": "tests/test_families.py::test_random_init_unet_segments_the_twins_lungs",
    "probe": "tests/test_families.py::test_strict_probe_on_a_supce_encoder_beats_the_same_probe_on_an_unlearned_encoder",
    "random_probe": "tests/test_families.py::test_the_tables_probe_protocol_lets_a_random_encoder_beat_chance_where_the_strict_probe_cannot",
}

KERNELS = {"default": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2"}}


def run_one(name: str, seed: int, kernels: str, out: Path, broken: str) -> tuple[str, int, str, bool]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CXRBENCH_LEARNS_SEED": str(seed), "CXRBENCH_LEARNS_OUT": str(out),
           "CXRBENCH_LEARNS_BROKEN": broken, **KERNELS[kernels]}
    for k in set(KERNELS["avx2"]) - set(KERNELS[kernels]):
        env.pop(k, None)
    tests = [LEARNS[name]] if isinstance(LEARNS[name], str) else list(LEARNS[name])
    with tempfile.TemporaryDirectory(prefix="learns-") as tmp:
        res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "--basetemp", tmp,
                              *tests], cwd=REPO, env=env, capture_output=True, text=True)
    passed = res.returncode == 0
    summary = [line.split() for line in res.stdout.splitlines() if line.startswith(("PASSED ", "FAILED ", "ERROR "))]
    with out.open("a") as f:
        for test in tests:
            ok = any(w[0] == "PASSED" and w[1] == test for w in summary)
            f.write(json.dumps({"test": test, "seed": seed, "kernels": kernels, "broken": broken, "passed": ok}) + "\n")
    tail = "" if passed else res.stdout[-1500:]
    print(f"{name:20s} seed {seed} {kernels:7s} {'broken ' if broken else ''}{'passed' if passed else 'FAILED'}{tail and chr(10) + tail}",
          flush=True)
    return name, seed, kernels, passed


def table(out: Path) -> str:
    """Markdown: one row per (test, broken), its measured numbers per kernel family and seed."""
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    by_test: dict = {}
    for r in rows:
        key = (r["test"], r["broken"], r["kernels"], r["seed"])
        by_test.setdefault(key, {}).update(r)
    names = {t: k for k, v in LEARNS.items() for t in ([v] if isinstance(v, str) else v)}
    lines = ["| test | variant | kernels | seed | measured | passed |", "|---|---|---|---|---|---|"]
    for (test, broken, kernels, seed), r in sorted(by_test.items(), key=lambda kv: (names.get(kv[0][0], kv[0][0]),) + kv[0][1:]):
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in r.items()
                            if k not in ("test", "seed", "kernels", "broken", "passed"))
        short = test.split("::")[-1].removeprefix("test_")[:48]
        lines.append(f"| {names.get(test, test)}: {short} | {broken or 'as is'} | {kernels} | {seed} | {metrics} | "
                     f"{'yes' if r.get('passed') else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tests", nargs="*", default=list(LEARNS), choices=list(LEARNS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--kernels", nargs="*", default=list(KERNELS), choices=list(KERNELS))
    ap.add_argument("--broken", nargs="?", const="detach", default="", choices=["detach", "mechanism_off"],
                    help="the broken variant, which must fail: a detached loss (default) or the test's mechanism off")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / ".cache/learns.jsonl")
    ap.add_argument("--table", action="store_true", help="print the table of --out and stop")
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.table:
        print(table(args.out))
        return
    runs = [(t, s, k) for t in args.tests for k in args.kernels for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda r: run_one(*r, args.out, args.broken), runs))
    bad = [d for d in done if d[3] == bool(args.broken)]
    print(f"{len(done) - len(bad)} of {len(done)} runs as expected ({'failing' if args.broken else 'passing'})")


if __name__ == "__main__":
    main()
