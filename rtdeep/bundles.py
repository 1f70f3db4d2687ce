"""Model bundles: weights, metadata and a model card in MONAI bundle form, checked by SHA256.

A bundle is a folder::

    <name>/configs/metadata.json   MONAI bundle metadata plus an "rtdeep" object (see below)
    <name>/configs/inference.json  segmentation bundles: pre/post-processing for ``monai.bundle run``
    <name>/models/model.pt         a plain state_dict (loaded with torch.load(weights_only=True))
    <name>/models/model.ts         segmentation bundles: the same network and weights traced to TorchScript
    <name>/docs/README.md          the model card (training data, training time, held-out metrics, speed)
    <name>/manifest.json           {relative path: sha256} of every other file

``metadata["rtdeep"]`` holds what rtdeep needs to run the model: ``kind`` ("segmentation" or
"classification"), ``site``, ``architecture``, ``network`` ``{"name", "kwargs"}`` (rebuilt through
:func:`rtdeep.models.build_network`), ``spacing_mm`` (model grid, i/j/k order), ``intensity_window``
``[low_hu, high_hu]``, ``in_channels`` and ``labels`` ``[{"value", "name", "color", "interpreted_type"}]``.

``models/model.ts`` lets a segmentation network run without importing MONAI (its package import
loads every submodule: about 3 s of a CT's segmentation on 2 cores). :func:`load_bundle` takes it
only when its parameters are exactly those of ``models/model.pt``; a bundle without it (a user's
own, or a network whose forward depends on its input's shape) is rebuilt through the registry.

An *ensemble* bundle has no weights and no ``network``: ``rtdeep.members`` names two or more
segmentation bundles of the same site, window and labels (found beside it, else by name), and
:mod:`rtdeep.inference.segment` averages their class probabilities on the ensemble's ``spacing_mm``
grid (a member on another grid, e.g. a finer one, has its probabilities resampled onto it)::

    <name>/configs/metadata.json   "rtdeep": {"kind": "segmentation", "members": [...], labels, grid ...}
    <name>/docs/README.md          the model card
    <name>/manifest.json

Bundled models live under ``Resources/Models`` at the project root (the folder above the
``rtdeep`` package); the environment variable ``RTDEEP_MODELS_DIR`` points elsewhere. A user's own
bundle in the same form loads the same way, by path.

Example:
    >>> bundle = load_bundle("thorax_unet3d")          # doctest: +SKIP
    >>> [organ.name for organ in bundle.labels.values()]  # doctest: +SKIP
    ['Lung_L', 'Lung_R', 'Heart', 'Esophagus', 'SpinalCord']
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtdeep.bundle_config import INFERENCE_CONFIG_PATH, inference_config
from rtdeep.errors import BundleError
from rtdeep.sites import Organ, organ_for_label

if TYPE_CHECKING:  # torch is imported where weights are read or written: listing bundles needs none
    import torch

__all__ = [
    "MANIFEST_NAME",
    "METADATA_PATH",
    "MODEL_CARD_PATH",
    "TORCHSCRIPT_PATH",
    "WEIGHTS_PATH",
    "LoadedBundle",
    "add_torchscript",
    "list_bundles",
    "load_bundle",
    "models_dir",
    "read_metadata",
    "resolve_bundle",
    "verify_bundle",
    "write_bundle",
    "write_ensemble_bundle",
    "write_manifest",
]

METADATA_PATH = "configs/metadata.json"
WEIGHTS_PATH = "models/model.pt"
TORCHSCRIPT_PATH = "models/model.ts"
MODEL_CARD_PATH = "docs/README.md"
MANIFEST_NAME = "manifest.json"
_REQUIRED = (METADATA_PATH, WEIGHTS_PATH, MODEL_CARD_PATH)
_ENSEMBLE_REQUIRED = (METADATA_PATH, MODEL_CARD_PATH)


@dataclass
class LoadedBundle:
    """A verified bundle with its network built, weights loaded and set to eval mode.

    Attributes:
        path: the bundle folder.
        metadata: the whole ``configs/metadata.json``.
        network: the ``torch.nn.Module`` on ``device``, in eval mode, prepared for inference (stride-1
            transposed convolutions as ordinary ones): the bundle's TorchScript module where it has
            one; for an ensemble, a ``ModuleList`` of its members' networks.
        device: the torch device the network is on.
        labels: label value -> organ.
        members: an ensemble's member bundles, loaded (empty for a single network).
    """

    path: Path
    metadata: dict[str, Any]
    network: torch.nn.Module
    device: str = "cpu"
    labels: dict[int, Organ] = field(default_factory=dict)
    members: tuple[LoadedBundle, ...] = ()

    @property
    def config(self) -> dict[str, Any]:
        """The ``"rtdeep"`` object of the metadata."""
        return self.metadata.get("rtdeep", {})

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or self.path.name)

    @property
    def kind(self) -> str:
        return str(self.config.get("kind", ""))

    @property
    def site(self) -> str:
        return str(self.config.get("site", ""))

    @property
    def architecture(self) -> str:
        return str(self.config.get("architecture", ""))

    @property
    def spacing_mm(self) -> tuple[float, float, float] | None:
        """Model grid spacing (i, j, k) in mm, if the bundle resamples its input."""
        spacing = self.config.get("spacing_mm")
        return None if spacing is None else tuple(float(s) for s in spacing)  # type: ignore[return-value]

    @property
    def intensity_window(self) -> tuple[float, float] | None:
        """(low, high) in HU mapped to [0, 1] before the network."""
        window = self.config.get("intensity_window")
        return None if window is None else (float(window[0]), float(window[1]))

    @property
    def in_channels(self) -> int:
        return int(self.config.get("in_channels", 1))


def models_dir() -> Path:
    """Folder holding the bundled models: ``$RTDEEP_MODELS_DIR`` or ``<project root>/Resources/Models``."""
    override = os.environ.get("RTDEEP_MODELS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "Resources" / "Models"


def list_bundles(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Bundle folders (those with ``configs/metadata.json``) under ``root`` (default :func:`models_dir`), sorted."""
    root = models_dir() if root is None else Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / METADATA_PATH).is_file())


def resolve_bundle(name_or_path: str | os.PathLike[str]) -> Path:
    """A bundle folder from a path, or from a name under :func:`models_dir`.

    Raises:
        BundleError: neither an existing bundle folder nor a bundled model name.
    """
    candidate = Path(name_or_path).expanduser()
    if (candidate / METADATA_PATH).is_file():
        return candidate
    named = models_dir() / str(name_or_path)
    if (named / METADATA_PATH).is_file():
        return named
    available = ", ".join(p.name for p in list_bundles()) or "none installed"
    raise BundleError(
        f"no model bundle here (expected {METADATA_PATH} inside a folder, or a bundled model name: {available})",
        path=candidate,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bundle_files(bundle_dir: Path) -> list[str]:
    return sorted(
        p.relative_to(bundle_dir).as_posix()
        for p in bundle_dir.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME and not p.name.startswith(".")
    )


def write_manifest(bundle_dir: str | os.PathLike[str]) -> Path:
    """(Re)write ``manifest.json``: SHA256 of every file in the bundle except itself and hidden files."""
    bundle_dir = Path(bundle_dir)
    manifest = {relative: _sha256(bundle_dir / relative) for relative in _bundle_files(bundle_dir)}
    path = bundle_dir / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def verify_bundle(path: str | os.PathLike[str]) -> dict[str, str]:
    """Check every file against ``manifest.json``.

    Returns:
        The manifest ``{relative path: sha256}``.

    Raises:
        BundleError: naming the file that is missing, unlisted or whose checksum does not match.
    """
    bundle_dir = Path(path)
    manifest_path = bundle_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError("bundle has no manifest.json (SHA256 of each file); refusing to load", path=manifest_path)
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise BundleError(f"manifest is not valid JSON: {error}", path=manifest_path) from error
    if not isinstance(manifest, dict):
        raise BundleError("manifest must map relative paths to sha256 hex digests", path=manifest_path)
    for required in _ENSEMBLE_REQUIRED if _is_ensemble(bundle_dir) else _REQUIRED:
        if required not in manifest:
            raise BundleError(f"required file {required} is not listed in the manifest", path=manifest_path)
    for relative, expected in sorted(manifest.items()):
        file_path = bundle_dir / relative
        if not file_path.is_file():
            raise BundleError("file listed in manifest.json is missing", path=file_path)
        actual = _sha256(file_path)
        if actual != expected:
            raise BundleError(
                f"checksum mismatch: sha256 {actual[:16]}... but manifest.json expects {str(expected)[:16]}...; "
                "the file was changed or corrupted, refusing to load",
                path=file_path,
            )
    return manifest


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``configs/metadata.json`` of a bundle (by name or path), without loading weights or verifying."""
    metadata_path = resolve_bundle(path) / METADATA_PATH
    try:
        metadata = json.loads(metadata_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise BundleError(f"metadata is not valid JSON: {error}", path=metadata_path) from error
    if not isinstance(metadata, dict) or not isinstance(metadata.get("rtdeep"), dict):
        raise BundleError("metadata has no 'rtdeep' object (kind, network, labels ...)", path=metadata_path)
    if not isinstance(metadata["rtdeep"].get("network"), dict) and "members" not in metadata["rtdeep"]:
        raise BundleError("metadata 'rtdeep' has no 'network' {name, kwargs} (nor ensemble 'members')",
                          path=metadata_path)
    return metadata


def _is_ensemble(bundle_dir: Path) -> bool:
    """Whether the folder's metadata names ensemble members (unreadable metadata: not an ensemble)."""
    try:
        return "members" in json.loads((bundle_dir / METADATA_PATH).read_text()).get("rtdeep", {})
    except (OSError, ValueError, AttributeError):
        return False


def _labels(metadata: dict[str, Any], metadata_path: Path) -> dict[int, Organ]:
    """Label value -> organ; names the organ table knows take its colour and codes (rtdeep.sites)."""
    labels = {}
    for entry in metadata["rtdeep"].get("labels", []):
        try:
            color = tuple(int(c) for c in entry.get("color", (255, 0, 0)))
            labels[int(entry["value"])] = organ_for_label(
                str(entry["name"]), color, str(entry.get("interpreted_type", "ORGAN"))  # type: ignore[arg-type]
            )
        except (KeyError, TypeError, ValueError) as error:
            raise BundleError(f"bad label entry {entry!r}: {error}", path=metadata_path) from error
    return labels


def load_bundle(name_or_path: str | os.PathLike[str], device: str = "cpu") -> LoadedBundle:
    """Verify a bundle's checksums, rebuild its network and load its weights (``weights_only=True``).

    Args:
        name_or_path: a bundled model name (e.g. ``"thorax_unet3d"``) or a bundle folder.
        device: torch device for the network (``"cpu"`` or ``"cuda"``).

    Raises:
        BundleError: missing or changed file, bad metadata, or weights that do not fit the network.
    """
    bundle_dir = resolve_bundle(name_or_path)
    verify_bundle(bundle_dir)
    metadata = read_metadata(bundle_dir)
    if "members" in metadata["rtdeep"]:
        return _load_ensemble(bundle_dir, metadata, device)
    import torch

    weights_path = bundle_dir / WEIGHTS_PATH
    try:
        state = torch.load(weights_path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises several types for unreadable or unsafe files
        raise BundleError(f"weights cannot be loaded safely: {error}", path=weights_path) from error
    if (bundle_dir / TORCHSCRIPT_PATH).is_file():
        network = _load_torchscript(bundle_dir / TORCHSCRIPT_PATH, state, device)
    else:
        network = _rebuild(metadata, state, weights_path).to(device)
    return LoadedBundle(
        path=bundle_dir,
        metadata=metadata,
        network=network,
        device=device,
        labels=_labels(metadata, bundle_dir / METADATA_PATH),
    )


def _rebuild(metadata: dict[str, Any], state: dict[str, Any], weights_path: Path) -> torch.nn.Module:
    """The network of ``metadata["rtdeep"]["network"]`` with ``state`` loaded, in eval mode and
    prepared for inference (stride-1 transposed convolutions as ordinary ones: same outputs, faster)."""
    from rtdeep.models.registry import build_network, stride_one_transposed_as_convolutions

    network = build_network(metadata["rtdeep"]["network"])
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        raise BundleError(f"weights do not fit the network in {METADATA_PATH}: {error}", path=weights_path) from error
    return stride_one_transposed_as_convolutions(network.eval())


def _load_torchscript(path: Path, state: dict[str, Any], device: str) -> torch.nn.Module:
    """The TorchScript module at ``path``, refused unless its parameters and buffers are exactly ``state``
    (the bundle's ``models/model.pt``)."""
    import torch

    try:
        with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit in favour of torch.export,
            warnings.simplefilter("ignore", DeprecationWarning)  # whose loader took 4 s, not 0.1 s
            network = torch.jit.load(str(path), map_location=device)
    except Exception as error:  # TorchScript raises RuntimeError and others for unreadable archives
        raise BundleError(f"TorchScript module cannot be loaded: {error}", path=path) from error
    own = network.state_dict()
    if own.keys() != state.keys() or not all(torch.equal(own[key], state[key]) for key in state):
        raise BundleError(f"TorchScript module does not hold the weights of {WEIGHTS_PATH}; refusing to load",
                          path=path)
    return network.eval()


def _stride_product(spec: dict[str, Any], axis: int) -> int:
    """What the network's strides multiply to along ``axis`` (an input size they divide); 32 for a
    network without ``strides``."""
    strides = spec.get("kwargs", {}).get("strides")
    if not strides:
        return 32
    product = 1
    for stride in strides:
        product *= int(stride[axis]) if isinstance(stride, (list, tuple)) else int(stride)
    return product


def _torchscript_bytes(network: torch.nn.Module, metadata: dict[str, Any]) -> bytes | None:
    """``network`` (eval mode, prepared for inference) traced to TorchScript, or None where the trace
    does not reproduce the network on a second input of another size and batch (a forward that
    branches on its input's shape); the bundle then loads through the registry alone."""
    import torch

    spec = metadata["rtdeep"]["network"]
    kwargs = spec.get("kwargs", {})
    spatial_dims, channels = int(kwargs.get("spatial_dims", 3)), int(kwargs.get("in_channels", 1))
    divisors = [_stride_product(spec, axis) for axis in range(spatial_dims)]
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(1, channels, *(2 * d for d in divisors), generator=generator)
    check = torch.rand(2, channels, *(3 * d for d in divisors), generator=generator)
    with torch.no_grad(), warnings.catch_warnings():
        # deprecation (see _load_torchscript), and shape checks a trace keeps as constants: the
        # second input below shows whether the trace holds for other sizes
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            traced = torch.jit.trace(network, example, check_trace=False)
        except Exception:  # noqa: BLE001  (any network a trace cannot follow loads through the registry)
            return None
        if not torch.allclose(traced(check), network(check), rtol=0.0, atol=1e-6):
            return None
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def add_torchscript(bundle_dir: str | os.PathLike[str]) -> bool:
    """Add ``models/model.ts`` to a segmentation bundle written without one (its weights, traced) and
    rewrite its manifest. Returns whether the network could be traced (see :func:`load_bundle`)."""
    bundle_dir = Path(bundle_dir)
    verify_bundle(bundle_dir)
    metadata = read_metadata(bundle_dir)
    if metadata["rtdeep"].get("kind") != "segmentation" or "members" in metadata["rtdeep"]:
        raise BundleError("only a segmentation network bundle takes a TorchScript module", path=bundle_dir)
    import torch

    weights_path = bundle_dir / WEIGHTS_PATH
    network = _rebuild(metadata, torch.load(weights_path, map_location="cpu", weights_only=True), weights_path)
    script = _torchscript_bytes(network, metadata)
    if script is None:
        return False
    (bundle_dir / TORCHSCRIPT_PATH).write_bytes(script)
    write_manifest(bundle_dir)
    return True


#: what an ensemble's members must share with it (their model grids may differ: see the module docstring)
_SHARED_BY_MEMBERS = ("site", "intensity_window")


def _load_ensemble(bundle_dir: Path, metadata: dict[str, Any], device: str) -> LoadedBundle:
    """An ensemble bundle with its members loaded (each verified); see the module docstring."""
    metadata_path = bundle_dir / METADATA_PATH
    config, names = metadata["rtdeep"], metadata["rtdeep"]["members"]
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(name, str) for name in names):
        raise BundleError("rtdeep.members must list two or more bundle names", path=metadata_path)
    labels = _labels(metadata, metadata_path)
    members = []
    for name in names:
        beside = bundle_dir.parent / name
        member_dir = beside if (beside / METADATA_PATH).is_file() else resolve_bundle(name)
        if _is_ensemble(member_dir):
            raise BundleError(f"member '{name}' is itself an ensemble", path=metadata_path)
        member = load_bundle(member_dir, device)
        for key in _SHARED_BY_MEMBERS:
            if member.config.get(key) != config.get(key):
                raise BundleError(f"member '{name}' has {key} {member.config.get(key)}, the ensemble "
                                  f"{config.get(key)}: members must share site and window",
                                  path=metadata_path)
        if [(value, organ.name) for value, organ in member.labels.items()] != \
                [(value, organ.name) for value, organ in labels.items()]:
            raise BundleError(f"member '{name}' has other labels than the ensemble", path=metadata_path)
        members.append(member)
    import torch

    network = torch.nn.ModuleList([member.network for member in members]).eval()
    return LoadedBundle(path=bundle_dir, metadata=metadata, network=network, device=device, labels=labels,
                        members=tuple(members))


def _write_atomically(out_dir: Path, files: dict[str, bytes], overwrite: bool) -> Path:
    """Write a bundle's files and manifest in a folder beside ``out_dir``, then rename it into place."""
    if out_dir.exists() and not overwrite:
        raise BundleError("bundle folder exists; choose a new path or pass overwrite", path=out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for relative, content in files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        write_manifest(staging)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir


def write_ensemble_bundle(
    out_dir: str | os.PathLike[str], metadata: dict[str, Any], model_card_md: str, overwrite: bool = False
) -> Path:
    """Write an ensemble bundle (metadata with ``rtdeep.members``, model card, manifest) atomically.

    Raises:
        BundleError: metadata without two or more members, or ``out_dir`` exists and not ``overwrite``.
    """
    out_dir = Path(out_dir)
    members = metadata.get("rtdeep", {}).get("members") if isinstance(metadata.get("rtdeep"), dict) else None
    if not isinstance(members, list) or len(members) < 2:
        raise BundleError("an ensemble's metadata needs rtdeep.members (two or more bundle names)", path=out_dir)
    return _write_atomically(out_dir, {METADATA_PATH: (json.dumps(metadata, indent=2) + "\n").encode(),
                                       MODEL_CARD_PATH: model_card_md.encode()}, overwrite)


def write_bundle(
    out_dir: str | os.PathLike[str],
    network: torch.nn.Module,
    metadata: dict[str, Any],
    model_card_md: str,
    overwrite: bool = False,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write a bundle folder atomically (built beside ``out_dir``, then renamed into place).

    Args:
        out_dir: the bundle folder to create.
        network: the module whose ``state_dict`` is saved (moved to CPU first).
        metadata: MONAI bundle metadata with an ``"rtdeep"`` object holding ``network`` {name, kwargs}.
        model_card_md: Markdown model card (``docs/README.md``).
        overwrite: replace an existing folder (default: refuse).
        extra_files: further files ``{relative path: content}`` (e.g. ``configs/training.json``).

    Returns:
        The bundle folder.

    Raises:
        BundleError: metadata without a rebuildable network, or ``out_dir`` exists and not ``overwrite``.
    """
    out_dir = Path(out_dir)
    spec = metadata.get("rtdeep", {}).get("network") if isinstance(metadata.get("rtdeep"), dict) else None
    if not isinstance(spec, dict):
        raise BundleError("metadata needs rtdeep.network {name, kwargs} to rebuild the module", path=out_dir)
    import torch

    from rtdeep.models.registry import build_network, stride_one_transposed_as_convolutions

    rebuilt = build_network(spec)
    state = {key: value.detach().cpu().contiguous() for key, value in network.state_dict().items()}
    try:
        rebuilt.load_state_dict(state)
    except RuntimeError as error:
        raise BundleError(f"rtdeep.network does not rebuild the given module: {error}", path=out_dir) from error

    weights = io.BytesIO()
    torch.save(state, weights)
    files = {METADATA_PATH: (json.dumps(metadata, indent=2) + "\n").encode(), WEIGHTS_PATH: weights.getvalue(),
             MODEL_CARD_PATH: model_card_md.encode(), **(extra_files or {})}
    if metadata["rtdeep"].get("kind") == "segmentation":
        if INFERENCE_CONFIG_PATH not in files:
            files[INFERENCE_CONFIG_PATH] = (json.dumps(inference_config(metadata), indent=2) + "\n").encode()
        script = _torchscript_bytes(stride_one_transposed_as_convolutions(rebuilt.eval()), metadata)
        if script is not None:
            files[TORCHSCRIPT_PATH] = script
    return _write_atomically(out_dir, files, overwrite)
