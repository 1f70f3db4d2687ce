"""DVH on the CT grid and on the dose grid (rtdeep.dvh)."""

from __future__ import annotations

import numpy as np
import pytest

from rtdeep.dicomrt.rtstruct_reader import read_contours
from rtdeep.dicomrt.types import PatientInfo, Roi
from rtdeep.dvh import dvh_from_samples, dvh_on_ct_grid, dvh_on_dose_grid
from rtdeep.errors import DoseError, StructureError
from rtdeep.volume import Volume, affine_from_geometry


def test_statistics_of_a_known_distribution():
    # 100 columns of 10 voxels each, dose = column index (0..99 Gy), 0.5 cc per voxel
    dose = np.repeat(np.arange(100, dtype=np.float64), 10)
    dvh = dvh_from_samples("box", dose, 0.5)
    stats = dvh.statistics()
    assert stats["volume_cc"] == pytest.approx(500.0)
    assert (stats["min_gy"], stats["max_gy"]) == (0.0, 99.0)
    assert stats["mean_gy"] == pytest.approx(49.5)
    assert stats["V20_pct"] == pytest.approx(80.0)  # columns 20..99
    assert stats["V20_cc"] == pytest.approx(400.0)
    assert stats["V5_pct"] == pytest.approx(95.0) and stats["V30_pct"] == pytest.approx(70.0)
    assert stats["D50_gy"] == pytest.approx(50.0, abs=0.011)  # 50 % of the volume gets >= 50 Gy
    assert stats["D2cc_gy"] == pytest.approx(99.0, abs=0.011)  # the hottest 2 cc: 4 voxels at 99 Gy
    _, cumulative = dvh.cumulative_cc()
    assert cumulative[0] == pytest.approx(500.0) and np.all(np.diff(cumulative) <= 1e-9)


def test_dose_at_volume_matches_percentiles_of_a_continuous_sample():
    rng = np.random.default_rng(4)
    dose = rng.gamma(4.0, 5.0, 200_000)
    dvh = dvh_from_samples("organ", dose, 0.01)
    for pct in (98, 95, 50, 2):
        assert dvh.dose_at_volume_pct(pct) == pytest.approx(np.percentile(dose, 100 - pct), abs=0.02)
    assert dvh.volume_at_dose_pct(20.0) == pytest.approx(100 * np.mean(dose >= 20.0), abs=0.01)
    assert dvh.mean_gy == pytest.approx(dose.mean())
    assert np.isnan(dvh.dose_at_volume_cc(1e6))  # more than the structure holds


def test_uniform_dose_gives_flat_statistics_and_empty_structure_is_refused():
    dvh = dvh_from_samples("ptv", np.full(1000, 60.0), 0.1)
    for key in ("min_gy", "mean_gy", "max_gy", "D98_gy", "D95_gy", "D50_gy", "D2_gy"):
        assert dvh.statistics()[key] == pytest.approx(60.0, abs=0.011)
    with pytest.raises(StructureError):
        dvh_from_samples("empty", np.zeros(0), 0.1)


@pytest.fixture(scope="module")
def sphere_study():
    """CT 40x64x64, 2 mm pixels, 3 mm slices; a sphere (r = 30 mm) and a box; dose linear in x."""
    shape = (40, 64, 64)
    affine = affine_from_geometry((-63.0, -63.0, -58.5), (2.0, 2.0, 3.0))
    ct = Volume(np.zeros(shape, np.float32), affine)
    k, j, i = np.indices(shape)
    lps = ct.index_to_lps(np.stack([i, j, k], -1))
    sphere = np.linalg.norm(lps, axis=-1) <= 30.0
    box = (np.abs(lps[..., 0] - 10) <= 20) & (np.abs(lps[..., 1]) <= 20) & (np.abs(lps[..., 2]) <= 21)
    dose = Volume((30.0 + 0.5 * lps[..., 0]).astype(np.float32), affine)  # 0 Gy at x = -60, 60 Gy at 60
    return ct, {"Sphere": sphere, "Box": box}, dose


def test_ct_grid_dvh_of_a_sphere_in_a_linear_field(sphere_study):
    ct, masks, dose = sphere_study
    dvhs = dvh_on_ct_grid(ct, masks, dose)
    sphere = dvhs["Sphere"]
    assert sphere.volume_cc == pytest.approx(4 / 3 * np.pi * 3.0**3, rel=0.02)
    assert sphere.mean_gy == pytest.approx(30.0, abs=0.05)  # the field is linear: mean = centre dose
    assert sphere.min_gy == pytest.approx(15.0, abs=1.0) and sphere.max_gy == pytest.approx(45.0, abs=1.0)
    assert dvhs["Box"].mean_gy == pytest.approx(35.0, abs=0.05)


def test_ct_grid_dvh_with_dose_on_its_own_grid_and_coverage(sphere_study):
    ct, masks, dose = sphere_study
    coarse_affine = affine_from_geometry((-64.0, -64.0, -60.0), (4.0, 4.0, 5.0))
    coarse = Volume(np.zeros((25, 33, 33), np.float32), coarse_affine)
    k, j, i = np.indices(coarse.shape)
    x = coarse.index_to_lps(np.stack([i, j, k], -1))[..., 0]
    coarse = coarse.with_array((30.0 + 0.5 * x).astype(np.float32))
    same = dvh_on_ct_grid(ct, masks, dose)["Sphere"]
    resampled = dvh_on_ct_grid(ct, masks, coarse)["Sphere"]
    assert resampled.mean_gy == pytest.approx(same.mean_gy, abs=1e-3)
    assert resampled.dose_at_volume_pct(95) == pytest.approx(same.dose_at_volume_pct(95), abs=0.02)
    # a dose grid that stops at z = 0: about half the sphere is uncovered
    half = Volume(coarse.array[:13].copy(), coarse_affine)
    with pytest.raises(DoseError) as error:
        dvh_on_ct_grid(ct, masks, half, ["Sphere"])
    assert "Sphere" in str(error.value) and "outside the dose grid" in str(error.value)
    partial = dvh_on_ct_grid(ct, masks, half, ["Sphere"], max_uncovered_fraction=0.6)["Sphere"]
    assert 0.4 < partial.uncovered_fraction < 0.6
    assert partial.statistics()["uncovered_pct"] == pytest.approx(100 * partial.uncovered_fraction)


def _write_study(tmp_path, ct_volume, masks, dose_volume):
    from rtdeep.dicomrt.ct_writer import write_ct_series
    from rtdeep.dicomrt.rtdose_writer import write_rtdose
    from rtdeep.dicomrt.rtstruct_writer import write_rtstruct

    series = write_ct_series(ct_volume, tmp_path / "CT", PatientInfo(patient_id="DVH1"), uid_seed="dvh")
    rois = [Roi(name, mask, number=n + 1) for n, (name, mask) in enumerate(masks.items())]
    rs = write_rtstruct(series, rois, tmp_path / "RS.dcm", uid_seed="dvh")
    rd = write_rtdose(dose_volume, series, tmp_path / "RD.dcm", uid_seed="dvh")
    return series, rs, rd


def test_dose_grid_dvh_agrees_with_ct_grid_dvh(sphere_study, tmp_path):
    from rtdeep.dicomrt.rtdose_reader import read_rtdose, resample_dose
    from rtdeep.dicomrt.rtstruct_reader import read_rtstruct

    ct, masks, _ = sphere_study
    # dose written on a coarser grid, offset from the CT grid (4 mm pixels, 2.5 mm planes)
    coarse_affine = affine_from_geometry((-65.0, -65.0, -61.0), (4.0, 4.0, 2.5))
    shape = (50, 34, 34)
    k, j, i = np.indices(shape)
    x = Volume(np.zeros(shape, np.float32), coarse_affine).index_to_lps(np.stack([i, j, k], -1))[..., 0]
    coarse = Volume(np.clip(30.0 + 0.5 * x, 0, None).astype(np.float32), coarse_affine)
    series, rs_path, rd_path = _write_study(tmp_path, ct, masks, coarse)

    grid = read_rtdose(rd_path)
    contours = read_contours(rs_path)
    assert set(contours) == {"Sphere", "Box"} and all(len(c) > 0 for c in contours.values())
    on_dose = dvh_on_dose_grid(grid.dose, contours)
    combined = {"Sphere-Box": (["Sphere"], ["Box"]), "Sphere+Box": (["Sphere", "Box"], [])}
    on_dose_fine = dvh_on_dose_grid(grid.dose, contours, supersample=4, combined=combined)
    structure_set = read_rtstruct(rs_path, series)
    on_ct = dvh_on_ct_grid(series.volume, structure_set, resample_dose(grid, series), dose_grid=grid.dose,
                           combined=combined)
    union = masks["Sphere"] | masks["Box"]
    assert on_ct["Sphere+Box"].volume_cc == pytest.approx(union.sum() * ct.voxel_volume_cc)
    assert on_ct["Sphere-Box"].volume_cc == pytest.approx((masks["Sphere"] & ~masks["Box"]).sum() * ct.voxel_volume_cc)
    for name in combined:  # the box overlaps half the sphere: a failed subtraction would be far off
        assert on_dose_fine[name].volume_cc == pytest.approx(on_ct[name].volume_cc, rel=0.03)
        assert on_dose_fine[name].mean_gy == pytest.approx(on_ct[name].mean_gy, rel=0.01)
    for name in ("Sphere", "Box"):
        coarse_dvh, fine, reference = on_dose[name], on_dose_fine[name], on_ct[name]
        assert coarse_dvh.grid == "dose" and reference.grid == "ct"
        # 4 mm dose pixels sample a 40-60 mm structure coarsely: a few % apart
        assert coarse_dvh.mean_gy == pytest.approx(reference.mean_gy, rel=0.02)
        assert coarse_dvh.volume_cc == pytest.approx(reference.volume_cc, rel=0.1)
        # 4 x 4 supersampling: mean within 1 %, volume 2 %; D95 within 2 % (the CT grid samples at
        # 2 mm voxel centres, 1 mm inside the contour, the supersampled grid up to the contour)
        assert fine.mean_gy == pytest.approx(reference.mean_gy, rel=0.01)
        assert fine.dose_at_volume_pct(95) == pytest.approx(reference.dose_at_volume_pct(95), rel=0.02)
        assert fine.volume_cc == pytest.approx(reference.volume_cc, rel=0.02)
        assert fine.uncovered_fraction == 0.0
    with pytest.raises(StructureError, match="Heart"):
        read_contours(rs_path, ["Heart"])


def test_sample_on_grid_handles_oblique_grids_and_reports_coverage():
    from rtdeep.dvh import sample_on_grid

    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    source = Volume(np.zeros((20, 40, 40), np.float32), affine_from_geometry((-30, -50, -20), (2.5, 2.5, 2.0),
                                                                             rotation))
    k, j, i = np.indices(source.shape)
    lps = source.index_to_lps(np.stack([i, j, k], -1))
    field = 2.0 * lps[..., 0] - lps[..., 1] + 0.5 * lps[..., 2]
    source = source.with_array(field.astype(np.float32))
    target_affine = affine_from_geometry((-20, -20, -10), (3.0, 3.0, 3.0))
    values, covered = sample_on_grid(source, target_affine, (12, 12, 12))
    tk, tj, ti = np.indices((12, 12, 12))
    target_lps = np.stack([ti, tj, tk], -1) * 3.0 + np.array([-20, -20, -10])
    expected = 2.0 * target_lps[..., 0] - target_lps[..., 1] + 0.5 * target_lps[..., 2]
    assert covered.mean() > 0.5 and not covered.all()
    assert np.allclose(values[covered], expected[covered], atol=1e-3)
    assert np.all(values[~covered] == 0)


def test_read_contours_of_a_real_mim_structure_set(real_dicom_dir):
    contours = read_contours(real_dicom_dir / "mim-rtstruct-ge-ct" / "RS_MIM.dcm")
    assert len(contours) == 4 and all(name.startswith("ROI") for name in contours)
    polygons = [p for c in contours.values() for p in c]
    assert polygons and all(p.ndim == 2 and p.shape[1] == 3 and len(p) >= 3 for p in polygons)
    assert all(np.ptp(p[:, 2]) < 1e-3 for p in polygons)  # axial contours: one z each
