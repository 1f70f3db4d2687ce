"""``configs/inference.json``: a segmentation bundle's pre- and post-processing as a MONAI bundle config.

With it, ``monai.bundle`` runs a bundle without rtdeep's Python entry points (rtdeep is still
imported for the network-call wrapper, :class:`rtdeep.inference.predict.ModelGridInferer`)::

    python -m monai.bundle run --config_file Resources/Models/thorax_unet3d/configs/inference.json \\
        --bundle_root Resources/Models/thorax_unet3d --dataset_dir ct_niftis --output_dir out

Input: NIfTI CTs in HU (``dataset_dir/*.nii.gz``, e.g. written by ``rtdeep segment --nifti``'s
conventions: array ``[i, j, k]`` of the DICOM grid). Steps, as in :mod:`rtdeep.inference.segment`:
crop to the body (``rtdeep.inference.preprocess.body_voxels``: HU > -500 less thin sheets such as a
couch top, 4 voxels margin in rows and columns), resample to the model spacing
(``Spacingd``, bilinear; rtdeep also smooths downsampled axes, so results differ slightly), window
the HU to [0, 1], run the network (3D sliding window or 2.5D slice stacks), take the most probable
class, keep each organ's largest connected component, fill holes (rtdeep also trims the strands a
compact organ sends out, :func:`rtdeep.inference.postprocess.trim_strands`), invert the crop and resampling
(nearest) and save a label map ``<name>_seg.nii.gz`` (label values = ``rtdeep.labels`` values).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rtdeep.models.architectures import DEFAULT_INFERENCE_OVERLAP, DEFAULT_INFERENCE_WINDOW

__all__ = ["INFERENCE_CONFIG_PATH", "add_inference_config", "inference_config"]

INFERENCE_CONFIG_PATH = "configs/inference.json"


def inference_config(metadata: dict[str, Any]) -> dict[str, Any]:
    """The ``monai.bundle`` inference config of a segmentation bundle from its metadata.

    Raises:
        ValueError: not a segmentation bundle's metadata (no ``rtdeep`` network, spacing, window).
    """
    # imported here: rtdeep.inference imports rtdeep.bundles, which imports this module
    from rtdeep.inference.preprocess import tissue_level

    config = metadata.get("rtdeep", {})
    if config.get("kind") != "segmentation":
        raise ValueError(f"inference.json is written for segmentation bundles, not '{config.get('kind')}'")
    network = config["network"]
    settings = config["inference"]
    low_hu, high_hu = (float(v) for v in config["intensity_window"])
    labels = [int(label["value"]) for label in config["labels"]]
    return {
        "imports": ["$import glob", "$import os", "$import torch", "$import monai", "$import rtdeep.inference.predict",
                    "$from rtdeep.inference.preprocess import body_voxels"],
        "bundle_root": ".",
        "dataset_dir": "$@bundle_root + '/data'",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": "$[{'image': path} for path in sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*')))]",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": f"monai.networks.nets.{network['name']}", **network["kwargs"]},
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image", "image_only": False},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "CropForegroundd", "keys": "image", "source_key": "image",
                 "select_fn": "$body_voxels", "margin": [4, 4, 0], "allow_smaller": True},
                {"_target_": "Spacingd", "keys": "image", "pixdim": [float(s) for s in config["spacing_mm"]],
                 "mode": "bilinear"},
                {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": low_hu, "a_max": high_hu,
                 "b_min": 0.0, "b_max": 1.0, "clip": True},
                # NIfTI arrays are [i, j, k]; rtdeep's networks see [k, j, i]
                {"_target_": "Transposed", "keys": "image", "indices": [0, 3, 2, 1]},
                {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {
            "_target_": "rtdeep.inference.predict.ModelGridInferer",
            "spatial_dims": int(settings["spatial_dims"]),
            "context_slices": int(settings.get("context_slices", 1)),
            "roi_size": [int(r) for r in settings.get("roi_size", DEFAULT_INFERENCE_WINDOW)],
            "overlap": float(settings.get("overlap", DEFAULT_INFERENCE_OVERLAP)),
            "slice_batch": int(settings.get("slice_batch", 16)),
            "size_divisor": int(settings.get("size_divisor", 16)),
            "tissue_level": tissue_level(config["intensity_window"]),
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {"_target_": "KeepLargestConnectedComponentd", "keys": "pred", "applied_labels": labels,
                 "independent": True},
                {"_target_": "FillHolesd", "keys": "pred", "applied_labels": labels},
                {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
                 "nearest_interp": True, "to_tensor": True},
                {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
                 "output_dtype": "$torch.uint8", "separate_folder": False, "resample": False},
            ],
        },
        # plain expressions (no pytorch-ignite): load the weights, then for every CT: infer, post-process
        "initialize": [
            "$monai.utils.set_determinism(seed=0)",
            ("$@network.load_state_dict(torch.load(@bundle_root + '/models/model.pt', map_location=@device, "
             "weights_only=True))"),
        ],
        "run": [
            ("$[@postprocessing(item) for batch in @dataloader for item in monai.data.decollate_batch("
             "{**batch, 'pred': @inferer(batch['image'].to(@device), @network)})]")
        ],
    }


def add_inference_config(bundle_dir: str | os.PathLike[str]) -> Path:
    """Write ``configs/inference.json`` into an existing segmentation bundle and refresh its manifest.

    The weights, metadata and model card are not touched; the manifest gains the new file.
    Refuses (FileExistsError) when the bundle already has an inference config.
    """
    from rtdeep.bundles import read_metadata, verify_bundle, write_manifest

    bundle_dir = Path(bundle_dir)
    verify_bundle(bundle_dir)
    target = bundle_dir / INFERENCE_CONFIG_PATH
    if target.exists():
        raise FileExistsError(f"{target} exists")
    target.write_text(json.dumps(inference_config(read_metadata(bundle_dir)), indent=2) + "\n")
    write_manifest(bundle_dir)
    return target


if __name__ == "__main__":
    import sys

    for folder in sys.argv[1:]:
        print(add_inference_config(folder))
