"""The one site and organ table: every consumer reads the same names, colours and codes."""

from __future__ import annotations

import json

import pytest
from conftest import shipped_segmentation_bundles

from rtdeep.bundles import METADATA_PATH, list_bundles, load_bundle
from rtdeep.errors import RtDeepError
from rtdeep.phantom import generate_patient
from rtdeep.sites import ORGANS, SITES, get_organ, get_site, organ_for_label


def test_every_site_organ_is_coded_and_coloured_apart() -> None:
    for site in SITES.values():
        structures = site.structures
        assert len({organ.color_rgb for organ in structures}) == len(structures), site.name
        for organ in structures:
            assert organ.type_code is not None and organ.type_code.scheme == "SCT", organ.name
            assert organ.type_code.value.isdigit() and organ.category_code.value.isdigit()
            assert all(0 <= channel <= 255 for channel in organ.color_rgb)
            if organ.volume_cc is not None:
                assert 0 < organ.volume_cc[0] < organ.volume_cc[1]
        assert site.n_classes == len(site.organ_names) + 1


def test_paired_organs_share_a_type_and_differ_in_laterality() -> None:
    left, right = ORGANS["Parotid_L"], ORGANS["Parotid_R"]
    assert left.type_code == right.type_code and left.type_code.value == "45289007"
    assert (left.laterality.meaning, right.laterality.meaning) == ("Left", "Right")
    assert ORGANS["Heart"].laterality is None
    assert ORGANS["Lung_L"].type_code.as_terminology_string() == "SCT^39607008^Lung"


@pytest.mark.parametrize("site_name", list(SITES))
def test_phantom_structures_take_the_table_colours_and_types(site_name: str) -> None:
    patient = generate_patient(site_name, 7, 0, grid="small")
    for roi in patient.rois:
        assert (roi.color_rgb, roi.interpreted_type) == (ORGANS[roi.name].color_rgb, ORGANS[roi.name].interpreted_type)
    assert [roi.name for roi in patient.rois] == [organ.name for organ in get_site(site_name).structures]


def test_bundled_models_label_with_the_table() -> None:
    bundles = [path for path in list_bundles() if json.loads((path / METADATA_PATH).read_text())["rtdeep"]["kind"]
               == "segmentation"]
    assert sorted(path.name for path in bundles) == sorted(shipped_segmentation_bundles())
    for path in bundles:
        config = json.loads((path / METADATA_PATH).read_text())["rtdeep"]
        for entry in config["labels"]:
            assert tuple(entry["color"]) == ORGANS[entry["name"]].color_rgb, (path.name, entry["name"])
        assert [entry["name"] for entry in config["labels"]] == list(SITES[config["site"]].organ_names)
    bundle = load_bundle(bundles[0])
    assert all(organ is ORGANS[organ.name] for organ in bundle.labels.values())


def test_unknown_names_fail_or_stay_uncoded() -> None:
    with pytest.raises(RtDeepError, match="unknown site 'pelvis'"):
        get_site("pelvis")
    with pytest.raises(RtDeepError, match="unknown organ 'Bladder'"):
        get_organ("Bladder")
    custom = organ_for_label("Bladder", (1, 2, 3))
    assert (custom.color_rgb, custom.type_code) == ((1, 2, 3), None)
    assert organ_for_label("Heart", (1, 2, 3)) is ORGANS["Heart"]
