#!/usr/bin/env bash
# Train, evaluate and package the eight bundled segmentation models (Resources/Models/<site>_<arch>).
# All data are synthetic phantoms (rtdeep.phantom); see rtdeep/training/train_all.py for the splits.
# Usage: bench/train_bundles.sh [ITERATIONS] [MINUTES_CAP] [SITES]
#   ITERATIONS: the equal budget, iterations per model (default 3000: the last third with cosine
#   learning-rate decay); MINUTES_CAP: wall-clock safety cap per model (default 400); SITES: default
#   "thorax headneck". FINETUNE=1 starts every model from the shipped bundle of the same name
#   (only possible while the architecture in rtdeep/models/architectures.py still matches it).
#   TRAIN_PHANTOMS=N trains on N phantoms of seed 1 instead of the shipped bundles' 24.
# Every model trains from scratch on the same phantoms with one torch thread; two chains run side by
# side (3D U-Net then 2.5D U-Net; 3D GAN then 2.5D GAN), which keeps a 2-core machine busy: about
# 105 min per site there (head and neck, 2 December 2026). Work files go to
# bench/out/train_bundles/. Re-running resumes from the checkpoints. The shipped bundles are
# evaluated on the same held-out phantoms first (heldout_shipped.json) so the two can be compared
# before `package` replaces them.
set -euo pipefail
cd "$(dirname "$0")/.."
ITERATIONS="${1:-3000}"
MINUTES="${2:-400}"
SITES="${3:-thorax headneck}"
DECAY_FROM=$((ITERATIONS * 2 / 3))
PY=".venv/bin/python"
START=()
[ "${FINETUNE:-0}" = "1" ] && START=(--finetune)
mkdir -p bench/out/train_bundles
export OMP_NUM_THREADS=1
for site in $SITES; do
  $PY -m rtdeep.training.train_all prepare --sites "$site" --train-phantoms "${TRAIN_PHANTOMS:-24}"
  $PY -m rtdeep.training.train_all heldout --sites "$site"
  $PY -m rtdeep.training.train_all evaluate --sites "$site" --shipped --threads 2
  for chain in "unet3d unet25d" "gan3d gan25d"; do
    # shellcheck disable=SC2086  # the chain is two architecture names
    nice -n 10 $PY -m rtdeep.training.train_all train --sites "$site" --archs $chain --iterations "$ITERATIONS" \
      --decay-from "$DECAY_FROM" --minutes "$MINUTES" --threads 1 --train-phantoms "${TRAIN_PHANTOMS:-24}" "${START[@]}" \
      > "bench/out/train_bundles/${site}_${chain// /_}.log" 2>&1 &
  done
  wait
  $PY -m rtdeep.training.train_all evaluate --sites "$site" --threads 2
done
$PY bench/bench_segment.py --json bench/out/bench_segment.json
# compare heldout.json with heldout_shipped.json per model before packaging:
echo "review bench/out/train_bundles/*/heldout*.json, then: $PY -m rtdeep.training.train_all package --sites <site> --archs <archs>"
echo "and re-measure the site's ensemble of the new members: $PY -m rtdeep.training.train_all ensemble --sites <site> --archs unet3d unet25d --threads 2 --choice '...'"
