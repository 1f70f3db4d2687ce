"""Model bundles: checksums, loading, the bundled models and the model database."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import shipped_network_bundles, shipped_segmentation_bundles

from rtdeep.bundles import (
    MANIFEST_NAME,
    TORCHSCRIPT_PATH,
    WEIGHTS_PATH,
    add_torchscript,
    list_bundles,
    load_bundle,
    models_dir,
    read_metadata,
    resolve_bundle,
    verify_bundle,
    write_bundle,
    write_manifest,
)
from rtdeep.errors import BundleError, RtDeepError
from rtdeep.models import build_network
from rtdeep.models.architectures import ARCHITECTURES
from rtdeep.sites import SITES
from rtdeep.training.model_card import segmentation_metadata

SEGMENTATION_BUNDLES = shipped_segmentation_bundles()


def _network_bundles() -> list[Path]:
    """Segmentation bundles with weights of their own (not ensembles)."""
    return [p for p in list_bundles() if read_metadata(p)["rtdeep"].get("kind") == "segmentation"
            and "members" not in read_metadata(p)["rtdeep"]]


@pytest.fixture()
def small_bundle(tmp_path: Path) -> Path:
    site, arch = SITES["thorax"], ARCHITECTURES["unet3d"]
    torch.manual_seed(0)
    network = build_network(arch.network_spec(site))
    return write_bundle(tmp_path / "my_bundle", network, segmentation_metadata(site, arch), "# test card\n")


def test_write_then_load_gives_the_same_network(small_bundle: Path) -> None:
    site, arch = SITES["thorax"], ARCHITECTURES["unet3d"]
    torch.manual_seed(0)
    original = build_network(arch.network_spec(site)).eval()
    bundle = load_bundle(small_bundle)  # a user's bundle, by path
    assert not bundle.network.training
    assert [organ.name for organ in bundle.labels.values()] == list(site.organ_names)
    assert bundle.spacing_mm == site.spacing_mm
    probe = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        # equal up to float rounding: load_bundle computes stride-1 transposed convolutions as ordinary ones
        assert torch.allclose(original(probe), bundle.network(probe), atol=1e-5)
    manifest = json.loads((small_bundle / MANIFEST_NAME).read_text())
    assert set(manifest) == {"configs/metadata.json", "configs/inference.json", "models/model.pt", "models/model.ts",
                             "docs/README.md"}


def test_torchscript_module_runs_the_network_and_must_hold_the_bundle_s_weights(small_bundle: Path) -> None:
    """The traced network gives the rebuilt network's output on another size and batch than it was
    traced with; a TorchScript file with other weights than model.pt is refused naming it, and a
    bundle without one loads through the registry, as a user's older bundle does."""
    traced = load_bundle(small_bundle).network
    assert isinstance(traced, torch.jit.ScriptModule)
    (small_bundle / TORCHSCRIPT_PATH).unlink()
    write_manifest(small_bundle)
    rebuilt = load_bundle(small_bundle).network
    assert not isinstance(rebuilt, torch.jit.ScriptModule)
    probe = torch.rand(3, 1, 24, 48, 40)
    with torch.no_grad():
        torch.testing.assert_close(traced(probe), rebuilt(probe), rtol=0.0, atol=1e-6)

    assert add_torchscript(small_bundle)  # an older bundle gains one
    assert isinstance(load_bundle(small_bundle).network, torch.jit.ScriptModule)
    other = torch.jit.load(str(small_bundle / TORCHSCRIPT_PATH))
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    torch.jit.save(other, str(small_bundle / TORCHSCRIPT_PATH))
    write_manifest(small_bundle)  # the checksums agree: only the weights check can tell
    with pytest.raises(BundleError, match="does not hold the weights") as raised:
        load_bundle(small_bundle)
    assert TORCHSCRIPT_PATH in str(raised.value)


def test_write_bundle_refuses_to_overwrite(small_bundle: Path) -> None:
    network = load_bundle(small_bundle).network
    with pytest.raises(BundleError, match="exists"):
        write_bundle(small_bundle, network, read_metadata(small_bundle), "# again\n")


def test_changed_weights_are_refused_naming_the_file(small_bundle: Path) -> None:
    weights = small_bundle / WEIGHTS_PATH
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch") as raised:
        load_bundle(small_bundle)
    assert str(weights) in str(raised.value)


def test_missing_file_and_missing_manifest_are_refused(small_bundle: Path) -> None:
    (small_bundle / "docs" / "README.md").unlink()
    with pytest.raises(BundleError, match="missing") as raised:
        verify_bundle(small_bundle)
    assert "README.md" in str(raised.value)
    (small_bundle / MANIFEST_NAME).unlink()
    with pytest.raises(BundleError, match="manifest"):
        load_bundle(small_bundle)


def test_unknown_or_untrusted_network_names_are_refused() -> None:
    with pytest.raises(BundleError, match="not registered"):
        build_network({"name": "NoSuchNet", "kwargs": {}})
    with pytest.raises(BundleError, match="not registered"):
        build_network({"name": "os:system", "kwargs": {}})
    with pytest.raises(BundleError, match="rejected its kwargs"):
        build_network({"name": "UNet", "kwargs": {"no_such_argument": 1}})


def test_unknown_bundle_name_lists_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no model bundle"):
        resolve_bundle(tmp_path / "nothing_here")


def test_models_dir_override(monkeypatch: pytest.MonkeyPatch, small_bundle: Path) -> None:
    monkeypatch.setenv("RTDEEP_MODELS_DIR", str(small_bundle.parent))
    assert models_dir() == small_bundle.parent
    assert list_bundles() == [small_bundle]
    assert load_bundle("my_bundle").path == small_bundle


def test_every_bundled_segmentation_model_verifies_and_loads() -> None:
    bundles = _network_bundles()
    assert sorted(p.name for p in bundles) == sorted(shipped_network_bundles())
    total_weights = 0
    for path in bundles:
        bundle = load_bundle(path)
        site = SITES[bundle.site]
        assert [organ.name for organ in bundle.labels.values()] == list(site.organ_names)
        assert not bundle.network.training
        assert isinstance(bundle.network, torch.jit.ScriptModule)  # runs without importing MONAI
        card = (path / "docs" / "README.md").read_text()
        assert "synthetic phantoms" in card.lower()
        assert "Held-out" in card and "Dice" in card
        total_weights += (path / WEIGHTS_PATH).stat().st_size
    assert total_weights <= 60 * 1024 * 1024


def test_model_database_lists_every_bundle() -> None:
    database = json.loads((models_dir() / "models.json").read_text())
    entries = {entry["name"]: entry for entry in database["models"]}
    assert set(SEGMENTATION_BUNDLES) <= set(entries)
    for name in SEGMENTATION_BUNDLES:
        entry = entries[name]
        assert entry["segments"] == list(SITES[entry["site"]].organ_names)
        assert (models_dir() / name).is_dir()


def test_readme_table_of_the_bundled_models_is_the_one_models_json_gives() -> None:
    """The README's table of the bundled models is generated (``python -m rtdeep.model_database
    --readme README.md``): a model packaged, re-measured or withdrawn without it fails here."""
    from rtdeep.model_database import README_BEGIN, README_END, models_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    shown = readme.split(README_BEGIN + "\n", 1)[1].split(README_END, 1)[0]
    assert shown == models_table()


def test_models_table_marks_the_default_and_organs_below_their_floor(tmp_path: Path) -> None:
    from rtdeep.model_database import README_BEGIN, README_END, models_table, update_readme

    def entry(name: str, dice: dict[str, float], seconds: float) -> dict:
        return {"name": name, "title": f"Head and neck: {name}", "site": "headneck",
                "segments": list(SITES["headneck"].organ_names), "heldout_dice_median": dice,
                "cpu_seconds_median": seconds, "peak_rss_mb_median": 1536.0}

    good = dict.fromkeys(SITES["headneck"].organ_names, 0.9)
    weak = {**good, "Parotid_L": 0.849}
    database = {"models": [entry("headneck_good", good, 7.84), entry("headneck_weak", weak, 14.26)],
                "not_shipped": [{"name": "headneck_old", "reason": "below"}]}
    (tmp_path / "models.json").write_text(json.dumps(database))
    table = models_table(tmp_path)
    rows = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| `")}
    assert rows["| `headneck_good` (default): headneck_good"].endswith("| 0.900 | 7.8 | 1.50 |")
    assert "| **0.849 below** | 0.900 |" in rows["| `headneck_weak`: headneck_weak"]
    assert "Thorax" not in table and "`headneck_old`" in table.splitlines()[-1]

    readme = tmp_path / "README.md"
    readme.write_text(f"# top\n{README_BEGIN}\nstale\n{README_END}\nafter\n")
    assert update_readme(readme, tmp_path) and not update_readme(readme, tmp_path)
    assert readme.read_text() == f"# top\n{README_BEGIN}\n{table}{README_END}\nafter\n"
    readme.write_text("# no table here\n")
    with pytest.raises(RtDeepError, match="needs one line"):
        update_readme(readme, tmp_path)


def test_copied_bundle_loads_from_its_new_place(tmp_path: Path) -> None:
    source = models_dir() / "thorax_unet25d"
    shutil.copytree(source, tmp_path / "copy")
    bundle = load_bundle(tmp_path / "copy")
    assert bundle.architecture == "unet25d" and bundle.path == tmp_path / "copy"
