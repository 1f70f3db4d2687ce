#!/usr/bin/env bash
# Train, evaluate and package the eight bundled segmentation models (Resources/Models/<site>_<arch>).
# All data are synthetic phantoms (rtdeep.phantom); see rtdeep/training/train_all.py for the splits.
# Usage: bench/train_bundles.sh [ITERATIONS] [MINUTES_CAP] [SITES]
#   ITERATIONS: the equal budget, iterations per model (default 300); MINUTES_CAP: wall-clock safety
#   cap per model (default 60); SITES: default "thorax headneck".
# Every model starts from the shipped bundle of the same name (--finetune) and sees the same
# phantoms; the four models of a site train in parallel, one torch thread each, niced. Work files go
# to bench/out/train_bundles/. Re-running resumes from the checkpoints. The shipped bundles are
# evaluated on the same held-out phantoms first (heldout_shipped.json) so the two can be compared
# before `package` replaces them.
set -euo pipefail
cd "$(dirname "$0")/.."
ITERATIONS="${1:-300}"
MINUTES="${2:-60}"
SITES="${3:-thorax headneck}"
PY=".venv/bin/python"
mkdir -p bench/out/train_bundles
export OMP_NUM_THREADS=1
for site in $SITES; do
  nice -n 10 $PY -m rtdeep.training.train_all prepare --sites "$site"
  nice -n 10 $PY -m rtdeep.training.train_all heldout --sites "$site"
  for arch in unet3d unet25d gan3d gan25d; do
    nice -n 10 $PY -m rtdeep.training.train_all train --sites "$site" --archs "$arch" --iterations "$ITERATIONS" \
      --minutes "$MINUTES" --threads 1 --finetune > "bench/out/train_bundles/${site}_${arch}.log" 2>&1 &
  done
  wait
  $PY -m rtdeep.training.train_all evaluate --sites "$site" --shipped --threads 2
  $PY -m rtdeep.training.train_all evaluate --sites "$site" --threads 2
done
$PY bench/bench_segment.py --json bench/out/bench_segment.json
# compare heldout.json with heldout_shipped.json per model before packaging:
echo "review bench/out/train_bundles/*/heldout*.json, then: $PY -m rtdeep.training.train_all package --sites <site> --archs <archs>"
