"""Bundles that ``monai.bundle`` runs (configs/inference.json) and the MONAI PatchGAN critic."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import NOT_SHIPPED, shipped_network_bundles

from rtdeep.bundle_config import INFERENCE_CONFIG_PATH, inference_config
from rtdeep.bundles import MANIFEST_NAME, list_bundles, load_bundle, read_metadata
from rtdeep.crop_files import save_nifti
from rtdeep.inference.segment import segment_volume
from rtdeep.metrics import dice_coefficient
from rtdeep.models import build_network
from rtdeep.models.architectures import ARCHITECTURES
from rtdeep.sites import SITES
from rtdeep.volume import Volume


def _network_bundles() -> list[Path]:
    """Segmentation bundles with weights of their own (ensembles have no MONAI inference config)."""
    return [p for p in list_bundles() if read_metadata(p)["rtdeep"].get("kind") == "segmentation"
            and "members" not in read_metadata(p)["rtdeep"]]


def test_every_segmentation_bundle_ships_the_config_its_writer_writes() -> None:
    bundles = _network_bundles()
    assert sorted(path.name for path in bundles) == sorted(shipped_network_bundles())
    for path in bundles:
        shipped = json.loads((path / INFERENCE_CONFIG_PATH).read_text())
        assert shipped == inference_config(read_metadata(path)), path.name
        assert INFERENCE_CONFIG_PATH in json.loads((path / MANIFEST_NAME).read_text()), path.name
        load_bundle(path)  # the checksums still verify


@pytest.mark.parametrize("bundle_name", ["thorax_unet25d", "thorax_unet3d"])
def test_monai_bundle_run_matches_rtdeep_segmentation(bundle_name: str, tmp_path: Path) -> None:
    """``monai.bundle.run`` on a NIfTI CT gives the label map rtdeep's own pipeline gives (2.5D slice
    stacks; 3D windows over each slab's tissue)."""
    from monai.bundle import run

    from rtdeep.phantom import generate_patient

    torch.set_num_threads(2)
    patient = generate_patient("thorax", 150, 2, grid="small")
    middle = patient.ct.shape[0] // 2
    part = slice(middle - 12, middle + 12)  # 24 slices through the lungs keep the test short
    affine = patient.ct.affine.copy()
    affine[:3, 3] = patient.ct.index_to_lps(np.array([0.0, 0.0, float(part.start)]))
    ct = Volume(patient.ct.array[part], affine)
    data = tmp_path / "data"
    data.mkdir()
    save_nifti(ct, data / "ct.nii.gz")
    bundle_dir = next(p for p in _network_bundles() if p.name == bundle_name)
    run(config_file=str(bundle_dir / INFERENCE_CONFIG_PATH), bundle_root=str(bundle_dir), dataset_dir=str(data),
        output_dir=str(tmp_path / "out"))
    labels = np.asarray(nib.load(str(tmp_path / "out" / "ct_seg.nii.gz")).dataobj).transpose(2, 1, 0)
    assert labels.shape == ct.shape
    rois = {roi.name: roi for roi in segment_volume(ct, load_bundle(bundle_dir))}
    for organ in ("Lung_L", "Lung_R", "Heart"):
        assert rois[organ].mask.any(), organ
        assert dice_coefficient(rois[organ].mask, labels == rois[organ].number) > 0.9, organ


@pytest.mark.parametrize("arch_name", [name for name, arch in ARCHITECTURES.items() if arch.is_gan])
def test_gan_critic_is_monai_patch_discriminator_and_bundles_hold_only_the_generator(arch_name: str) -> None:
    from monai.networks.nets import PatchDiscriminator

    arch, site = ARCHITECTURES[arch_name], SITES["thorax"]
    critic = build_network(arch.critic_spec(site))
    assert isinstance(critic, PatchDiscriminator)
    patch = (1, arch.context_slices + site.n_classes, *arch.patch_size)
    logits = critic(torch.zeros(patch))[-1]
    assert logits.shape[:2] == (1, 1) and all(1 < n < s for n, s in zip(logits.shape[2:], arch.patch_size))
    bundled = [p for p in _network_bundles() if read_metadata(p)["rtdeep"]["architecture"] == arch_name]
    if not bundled:  # withdrawn at every site (below a floor): no bundle of it to check
        assert all(f"{site}_{arch_name}" in NOT_SHIPPED for site in SITES)
        return
    bundle_dir = bundled[0]
    weights = torch.load(bundle_dir / "models" / "model.pt", weights_only=True)
    # the bundle's own spec: a bundle trained before an architecture change describes its network
    generator = build_network(read_metadata(bundle_dir)["rtdeep"]["network"])
    generator.load_state_dict(weights, strict=True)  # every stored tensor belongs to the generator
