"""The model database (``Resources/Models/models.json``): what the panels and the web app list.

``python -m rtdeep.training.train_all package`` writes one entry per bundled segmentation model: title,
site, organs, median held-out Dice per organ, median wall seconds and peak RSS per CT (from
``bench/bench_segment.py``). :func:`models_table` renders the entries as the README's table of the
bundled models (``python -m rtdeep.model_database --readme README.md`` rewrites it there). The atlas
baselines have no bundle and no entry; they are listed with their title only. A model is *weak*
when an organ's median held-out Dice is below :data:`WEAK_DICE`: the panel says so next to the model.

Example:
    >>> entries = read_model_database()
    >>> entries["thorax_unet3d"].organs[0]                       # doctest: +SKIP
    'Lung_L'
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rtdeep.errors import BundleError
from rtdeep.sites import ORGANS, SITES

__all__ = ["DATABASE_NAME", "WEAK_DICE", "ModelEntry", "default_model", "describe_model", "models_table",
           "organs_below_floor", "read_model_database", "update_readme", "weak_organs"]

DATABASE_NAME = "models.json"
#: an organ below this median held-out Dice makes a model "weak" in the panel
WEAK_DICE = 0.5


def weak_organs(heldout_dice: Mapping[str, float]) -> list[str]:
    """Organs whose median held-out Dice is below :data:`WEAK_DICE` (a missing or NaN Dice counts)."""
    return [organ for organ, dice in heldout_dice.items() if not dice >= WEAK_DICE]


def organs_below_floor(heldout_dice: Mapping[str, float]) -> list[str]:
    """Organs whose median held-out Dice is below the organ's floor (``Organ.dice_floor`` in
    :mod:`rtdeep.sites`, issue 9's floors; a NaN Dice counts). The one floor rule: the model list's
    warning, the default model, the training's withdrawal and its selection all apply this."""
    return [organ for organ, dice in heldout_dice.items()
            if organ in ORGANS and ORGANS[organ].dice_floor is not None and not dice >= ORGANS[organ].dice_floor]


@dataclass(frozen=True)
class ModelEntry:
    """One model of the database.

    Attributes:
        name: model name (bundle folder or ``<site>_atlas``).
        title: human-readable title.
        site: the site it segments.
        organs: TG-263 names in label order.
        heldout_dice: median held-out Dice per organ (empty when not measured).
        cpu_seconds: median seconds per CT on a CPU (None when not measured).
        gpu_seconds: median seconds per CT on a GPU (None when not measured).
        peak_rss_mb: median peak resident memory per CT in MB (None when not measured).
    """

    name: str
    title: str
    site: str
    organs: tuple[str, ...]
    heldout_dice: dict[str, float] = field(default_factory=dict)
    cpu_seconds: float | None = None
    gpu_seconds: float | None = None
    peak_rss_mb: float | None = None

    @property
    def weak_organs(self) -> list[str]:
        """Organs whose median held-out Dice is below :data:`WEAK_DICE`."""
        return weak_organs(self.heldout_dice)

    @property
    def organs_below_floor(self) -> list[str]:
        """Organs whose median held-out Dice is below the organ's floor (:func:`organs_below_floor`)."""
        return organs_below_floor(self.heldout_dice)

    @property
    def warning(self) -> str:
        """One line for the panel: weak organs first, else organs below their floor; empty otherwise."""
        weak = self.weak_organs
        if weak:
            listing = ", ".join(f"{organ} {self.heldout_dice[organ]:.2f}" for organ in weak)
            return f"Weak model: held-out Dice below {WEAK_DICE:.1f} for {listing}. Review every contour."
        below = self.organs_below_floor
        if below:
            # three decimals: 0.896 against a floor of 0.90 must not read "0.90 (floor 0.90)"
            listing = ", ".join(f"{organ} {self.heldout_dice[organ]:.3f} (floor {ORGANS[organ].dice_floor:.2f})"
                                for organ in below)
            return f"Below the accuracy floor on held-out phantoms: {listing}. Review these contours."
        return ""


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def read_model_database(models_dir: str | Path | None = None) -> dict[str, ModelEntry]:
    """Entries by model name: every bundled model of ``models.json``, then the atlas baselines.

    Raises:
        BundleError: ``models.json`` exists but is not a valid database.
    """
    from rtdeep.bundles import models_dir as default_models_dir

    path = Path(models_dir or default_models_dir()) / DATABASE_NAME
    entries: dict[str, ModelEntry] = {}
    if path.is_file():
        try:
            database = json.loads(path.read_text())
            for item in database["models"]:
                entries[str(item["name"])] = ModelEntry(
                    name=str(item["name"]),
                    title=str(item.get("title") or item["name"]),
                    site=str(item["site"]),
                    organs=tuple(str(organ) for organ in item.get("segments", ())),
                    heldout_dice={str(k): float(v) for k, v in (item.get("heldout_dice_median") or {}).items()},
                    cpu_seconds=_number(item.get("cpu_seconds_median")),
                    gpu_seconds=_number(item.get("gpu_seconds_median")),
                    peak_rss_mb=_number(item.get("peak_rss_mb_median")),
                )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise BundleError(f"not a model database: {error}", path=path) from error
    for site in SITES.values():
        name = f"{site.name}_atlas"
        entries[name] = ModelEntry(name, f"{site.title}: multi-atlas registration baseline", site.name,
                                   site.organ_names)
    return entries


def default_model(site: str, models_dir: str | Path | None = None) -> str:
    """The model a panel, the web app and ``rtdeep demo`` start with for ``site``: of the measured
    models, the one with the fewest organs below their floor, then the highest mean held-out Dice
    (the database decides, so retraining never leaves a stale default behind); the atlas when no
    network of the site is measured.

    Raises:
        BundleError: ``models.json`` exists but is not a valid database.
    """
    return _default_of(read_model_database(models_dir), site)


def _default_of(entries: Mapping[str, ModelEntry], site: str) -> str:
    """:func:`default_model` among ``entries`` (a database already read)."""
    measured = [entry for entry in entries.values() if entry.site == site and entry.heldout_dice]
    if not measured:
        return f"{site}_atlas"
    best = min(measured, key=lambda entry: (len(entry.organs_below_floor),
                                            -sum(entry.heldout_dice.values()) / len(entry.heldout_dice)))
    return best.name


def describe_model(entry: ModelEntry) -> str:
    """Several lines for a tooltip: title, organs with held-out Dice, expected time, warning."""
    organs = ", ".join(
        f"{organ} {entry.heldout_dice[organ]:.3f}" if organ in entry.heldout_dice else organ for organ in entry.organs
    )
    times = []
    if entry.cpu_seconds is not None:
        times.append(f"CPU about {entry.cpu_seconds:.0f} s")
    if entry.gpu_seconds is not None:
        times.append(f"GPU about {entry.gpu_seconds:.0f} s")
    lines = [entry.title, f"Organs (held-out Dice): {organs}" if entry.heldout_dice else f"Organs: {organs}",
             "Expected time per CT: " + (", ".join(times) if times else "not measured")]
    if entry.warning:
        lines.append(entry.warning)
    lines.append("Built from synthetic phantoms only; not for clinical use.")
    return "\n".join(lines)


#: the lines around the README's table of the bundled models (:func:`update_readme`)
README_BEGIN = "<!-- models.json table: python -m rtdeep.model_database --readme README.md -->"
README_END = "<!-- end of the models.json table -->"


def models_table(models_dir: str | Path | None = None) -> str:
    """The bundled segmentation models of ``models.json`` as Markdown: one table per site with each
    model's median held-out Dice per organ (below its floor in bold, with "below"), wall time and peak
    RSS per CT, the site's default marked; then the models not shipped, by name (the database says why).

    Raises:
        BundleError: ``models.json`` exists but is not a valid database.
    """
    from rtdeep.bundles import models_dir as default_models_dir

    entries = read_model_database(models_dir)
    lines = []
    for site in SITES.values():
        networks = sorted((e for e in entries.values() if e.site == site.name and e.heldout_dice),
                          key=lambda e: e.name)
        if not networks:
            continue
        default = _default_of(entries, site.name)
        lines += [f"**{site.title}**: median Dice on 6 held-out phantoms; the floor each organ must reach to ship",
                  "", "| model | " + " | ".join(site.organ_names) + " | wall s per CT | peak RSS GiB |",
                  "|---" * (len(site.organ_names) + 3) + "|",
                  "| floor | " + " | ".join(f"{ORGANS[o].dice_floor:.2f}" if ORGANS[o].dice_floor else "-"
                                           for o in site.organ_names) + " | 15 | 3 |"]
        for entry in networks:
            below = set(entry.organs_below_floor)
            cells = [(f"**{entry.heldout_dice[o]:.3f} below**" if o in below else f"{entry.heldout_dice[o]:.3f}")
                     if o in entry.heldout_dice else "-" for o in site.organ_names]
            seconds = f"{entry.cpu_seconds:.1f}" if entry.cpu_seconds is not None else "-"
            memory = f"{entry.peak_rss_mb / 1024:.2f}" if entry.peak_rss_mb is not None else "-"
            name = f"`{entry.name}` (default)" if entry.name == default else f"`{entry.name}`"
            lines.append(f"| {name}: {entry.title.split(': ', 1)[-1]} | " + " | ".join(cells)
                         + f" | {seconds} | {memory} |")
        lines.append("")
    path = Path(models_dir or default_models_dir()) / DATABASE_NAME
    withdrawn = sorted(str(item["name"]) for item in json.loads(path.read_text()).get("not_shipped", [])) \
        if path.is_file() else []
    if withdrawn:
        lines.append("Not shipped (`models.json`, `not_shipped`, says why): " + ", ".join(f"`{n}`" for n in withdrawn)
                     + ".")
    return "\n".join(lines).rstrip("\n") + "\n"


def update_readme(readme: str | Path, models_dir: str | Path | None = None) -> bool:
    """Replace the table between :data:`README_BEGIN` and :data:`README_END` in ``readme`` with
    :func:`models_table` (:func:`rtdeep.fileio.atomic_write`). Returns whether the file changed.

    Raises:
        RtDeepError: ``readme`` lacks the two lines.
    """
    from rtdeep.errors import RtDeepError
    from rtdeep.fileio import atomic_write

    path = Path(readme)
    text = path.read_text()
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1:
        raise RtDeepError(f"needs one line {README_BEGIN!r} and one line {README_END!r}", path=path)
    head, rest = text.split(README_BEGIN + "\n", 1)
    _, tail = rest.split(README_END, 1)
    new = head + README_BEGIN + "\n" + models_table(models_dir) + README_END + tail
    if new == text:
        return False
    atomic_write(path, lambda tmp: tmp.write_text(new), overwrite=True)
    return True


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="The bundled models of models.json as the README's Markdown table.")
    parser.add_argument("--models-dir", default=None, help="folder of models.json (default: the shipped models)")
    parser.add_argument("--readme", default=None, help="rewrite the table in this README instead of printing it")
    args = parser.parse_args()
    if args.readme:
        print("updated" if update_readme(args.readme, args.models_dir) else "up to date", args.readme)
    else:
        print(models_table(args.models_dir), end="")
