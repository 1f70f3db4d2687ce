#!/usr/bin/env bash
# Train, evaluate and package the eight bundled segmentation models (Resources/Models/<site>_<arch>).
# All data are synthetic phantoms (rtdeep.phantom); see rtdeep/training/train_all.py for the splits.
# Usage: bench/train_bundles.sh [MINUTES]   (wall-clock training budget per model; default 40)
# The four models of a site train in parallel, one torch thread each, niced; work files go to
# bench/out/train_bundles/. Re-running resumes from the checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${1:-40}"
mkdir -p bench/out/train_bundles
for site in thorax headneck; do
  for arch in unet3d unet25d gan3d gan25d; do
    nice -n 5 python -m rtdeep.training.train_all train --sites "$site" --archs "$arch" \
      --minutes "$MINUTES" --threads 1 > "bench/out/train_bundles/${site}_${arch}.log" 2>&1 &
  done
done
wait
python -m rtdeep.training.train_all evaluate --threads 2
python bench/bench_segment.py --json bench/out/bench_segment.json
python -m rtdeep.training.train_all package
