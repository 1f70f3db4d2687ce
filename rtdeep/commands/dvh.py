"""``rtdeep dvh``: dose-volume histograms, their statistics and NTCP, as CSV and a PNG plot.

From a study folder (CT + RTSTRUCT + RTDOSE; DVH on the CT grid by default, ``--grid dose`` for
the dose grid), or from just an RTSTRUCT and an RTDOSE (dose grid)::

    rtdeep dvh STUDY_DIR --out DIR
    rtdeep dvh --rtstruct RS.dcm --rtdose RD.dcm --structures Lung_L Lung_R Heart --out DIR

Names are matched with TG-263 synonyms (the output says which name was used). When both lungs
are found, a combined "Lungs-GTV" structure (lungs minus every GTV*) gives the mean lung dose and
the pneumonitis NTCP (QUANTEC logistic and LKB); parotids get the xerostomia LKB model.
``DIR`` receives ``dvh_stats.csv``, ``dvh_cumulative.csv`` (volume % receiving >= each 0.1 Gy step),
``dvh_differential.csv`` (cm^3 per 0.1 Gy bin) and ``dvh.png``;
nothing is written when anything fails.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

HELP = "dose-volume histograms (CT or dose grid), DVH statistics and NTCP; CSV + PNG"

LUNGS_MINUS_GTV = "Lungs-GTV"  # = rtdeep.ntcp.NORMAL_LUNG_NAME


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_dir", nargs="?", type=Path, help="a study folder (CT, RTSTRUCT, RTDOSE)")
    parser.add_argument("--rtstruct", type=Path, help="RTSTRUCT file (with --rtdose; no CT needed)")
    parser.add_argument("--rtdose", type=Path, help="RTDOSE file (with --rtstruct)")
    parser.add_argument("--structures", nargs="+", metavar="NAME", help="structures (default: all)")
    parser.add_argument("--grid", choices=("ct", "dose"), default=None,
                        help="sample on the CT grid (default with a study) or the dose grid")
    parser.add_argument("--supersample", type=int, default=2,
                        help="dose grid only: s x s samples per dose pixel (default 2)")
    parser.add_argument("--bin-width-gy", type=float, default=0.01, help="histogram bin (default 0.01 Gy)")
    parser.add_argument("--max-uncovered-pct", type=float, default=1.0,
                        help="refuse structures with more than this %% outside the dose grid (default 1)")
    parser.add_argument("--n-fractions", type=int, default=None,
                        help="convert to EQD2 for NTCP with this many fractions (default: from the RTPLAN "
                             "when its dose per fraction is not 2 Gy)")
    parser.add_argument("--alpha-beta-gy", type=float, default=3.0, help="alpha/beta for EQD2 (default 3 Gy)")
    parser.add_argument("--prescription-gy", type=float, default=None, help="for RELATIVE doses")
    parser.add_argument("--series-uid", default=None, metavar="UID",
                        help="CT SeriesInstanceUID when STUDY_DIR holds several CT series")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def _select(requested: list[str] | None, available: list[str]) -> tuple[list[str], list[str]]:
    """Names to compute (as in the file) and lines saying which synonyms were used."""
    from rtdeep.names import resolve_roi_names

    if not requested:
        return list(available), []
    matches = resolve_roi_names(requested, available)
    notes = [m.describe() for m in matches if m.how != "exact"]
    return [m.used for m in matches], notes


def _lung_combination(available: list[str]) -> tuple[list[str], list[str]] | None:
    """The normal lung's parts among ``available``: the ``lung`` crop preset (Lung_L + Lung_R - GTV*),
    the one definition :func:`rtdeep.ntcp.lung_dose_report` also uses."""
    from rtdeep.crop import get_preset
    from rtdeep.errors import StructureError
    from rtdeep.names import resolve_roi_names

    spec = get_preset("lung")
    try:
        lungs = [m.used for m in resolve_roi_names(spec.include, available)]
    except StructureError:
        return None
    gtvs = [m.used for m in resolve_roi_names(spec.exclude, available)]
    return lungs, gtvs


def _beyond_ct(ct_volume, contours: dict, requested: list[str] | None) -> list[str]:
    """Structures with a closed contour outside the CT's slices (or beside its field of view)."""
    import numpy as np

    inverse = np.linalg.inv(ct_volume.affine)
    limits = np.array(ct_volume.size_ijk, dtype=float) - 0.5
    wanted = set(_select(requested, list(contours))[0]) if requested else set(contours)
    beyond = []
    for name, polygons in contours.items():
        if name not in wanted:
            continue
        for points in polygons:
            ijk = points @ inverse[:3, :3].T + inverse[:3, 3]
            if np.any(ijk < -0.5) or np.any(ijk > limits):
                beyond.append(name)
                break
    return beyond


def _each_or_skip(compute, names: list[str], empty: set[str], combined, notes: list[str]) -> dict:
    """All structures (none named): skip those without contours and those no DVH can be made of,
    each with a note; an error when none is left."""
    from rtdeep.errors import RtDeepError, StructureError

    dvhs = {}
    for name in names:
        if name in empty:
            notes.append(f"skipped '{name}': no closed contour (empty structure, point or marker)")
            continue
        try:
            dvhs.update(compute([name], None))
        except RtDeepError as error:
            notes.append(f"skipped '{name}': {error.message}")
    if combined:
        dvhs.update(compute([], combined))
    if not dvhs:
        raise StructureError("no structure with a DVH (every one was skipped: " + "; ".join(notes) + ")")
    return dvhs


def _compute(args: argparse.Namespace):
    """(dvhs, grid name, notes, n_fractions)."""
    from rtdeep.dicomrt.rtstruct_reader import read_contours
    from rtdeep.dvh import dvh_on_ct_grid, dvh_on_dose_grid
    from rtdeep.errors import DoseError, RtDeepError, StructureError
    from rtdeep.ntcp import lung_dose_report

    limit = args.max_uncovered_pct / 100.0
    notes: list[str] = []
    n_fractions = args.n_fractions
    if args.study_dir is not None and (args.rtstruct or args.rtdose):
        raise StructureError("give STUDY_DIR or --rtstruct/--rtdose, not both")
    if args.study_dir is None:
        if not (args.rtstruct and args.rtdose):
            raise StructureError("give STUDY_DIR, or both --rtstruct and --rtdose")
        if args.grid == "ct":
            raise StructureError("--grid ct needs a study folder with the CT")
        from rtdeep.dicomrt.rtdose_reader import read_rtdose

        dose = read_rtdose(args.rtdose, prescription_gy=args.prescription_gy)
        rs_path = args.rtstruct
        grid = "dose"
        study = None
    else:
        from rtdeep.dicomrt.study import load_study

        study = load_study(args.study_dir, prescription_gy=args.prescription_gy,
                           series_instance_uid=args.series_uid, require=("RTSTRUCT", "RTDOSE"))
        if study.dose is None or study.dose_on_ct is None:
            raise DoseError("no RT Dose for the CT in this folder", path=args.study_dir)
        dose = study.dose
        rs_path = study.structure_set.path
        grid = args.grid or "ct"
        outside = _beyond_ct(study.ct.volume, read_contours(rs_path), args.structures)
        if outside and args.grid is None:
            grid = "dose"
            notes.append(f"the CT ({study.ct.volume.shape[0]} slices) does not cover {', '.join(outside)}: "
                         "DVHs computed on the dose grid from the contours")
        elif outside:
            raise StructureError("contours lie beyond the CT; the CT grid cannot hold this structure (use --grid "
                                 "dose)", path=rs_path, roi=outside[0])
        per_fraction = study.plan.dose_per_fraction_gy if study.plan is not None else None
        if n_fractions is None and per_fraction is not None and abs(per_fraction - 2.0) > 0.1:
            n_fractions = study.plan.fractions
            notes.append(f"plan gives {per_fraction:.2f} Gy per fraction: NTCP uses EQD2 ({n_fractions} fractions)")
    if dose.dose_type and dose.dose_type.upper() not in ("PHYSICAL", ""):
        notes.append(f"dose type {dose.dose_type}: statistics are of that dose as stored")

    try:
        if grid == "ct":
            available = study.structure_set.names()
            empty = {roi.name for roi in study.structure_set.rois if not roi.mask.any()}

            def compute(names, combined):
                dvhs = dvh_on_ct_grid(study.ct.volume, study.structure_set, study.dose_on_ct, names,
                                      dose_grid=dose.dose, bin_width_gy=args.bin_width_gy,
                                      max_uncovered_fraction=limit)
                if combined:  # the normal lung of the one lung-dose report (rtdeep.ntcp)
                    dvhs[LUNGS_MINUS_GTV] = lung_dose_report(study.ct.volume, study.structure_set, dose.dose,
                                                             max_uncovered_fraction=limit).dvh
                return dvhs
        else:
            contours = read_contours(rs_path)
            available = list(contours)
            empty = {name for name, polygons in contours.items() if not polygons}

            def compute(names, combined):
                return dvh_on_dose_grid(dose.dose, contours, names, combined=combined,
                                        supersample=args.supersample, bin_width_gy=args.bin_width_gy,
                                        max_uncovered_fraction=limit)
        names, synonym_notes = _select(args.structures, available)
        lung = _lung_combination([name for name in available if name not in empty])
        combined = {LUNGS_MINUS_GTV: lung} if lung and LUNGS_MINUS_GTV not in available else None
        if args.structures:
            dvhs = compute(names, combined)
        else:
            dvhs = _each_or_skip(compute, names, empty, combined, notes)
    except RtDeepError as error:
        if error.path:
            raise
        where = args.study_dir or rs_path
        raise type(error)(error.message, path=where, tag=error.tag, roi=error.roi) from error
    notes += [f"name used: {line}" for line in synonym_notes]
    if combined:
        include, exclude = combined[LUNGS_MINUS_GTV]
        notes.append(f"{LUNGS_MINUS_GTV} = {' + '.join(include)}" + (f" - {' - '.join(exclude)}" if exclude else
                                                                         " (no GTV found: nothing subtracted)"))
    return dvhs, grid, notes, n_fractions


def _ntcp_columns(name: str, dvh, n_fractions: int | None, alpha_beta_gy: float) -> dict[str, float]:
    from rtdeep.names import canonical_key
    from rtdeep.ntcp import LungDoseReport, lkb_ntcp_from_dvh

    if name == LUNGS_MINUS_GTV:
        report = LungDoseReport.from_dvh(dvh, n_fractions=n_fractions, alpha_beta_gy=alpha_beta_gy)
        return {"mld_eqd2_gy": report.mld_eqd2_gy, "ntcp_logistic_mld": report.ntcp_logistic_mld,
                "ntcp_lkb_pneumonitis_quantec": report.ntcp_lkb,
                "ntcp_lkb_pneumonitis_seppenwoolde": report.ntcp_lkb_seppenwoolde}
    if canonical_key(name).startswith("parotid"):
        return {"ntcp_lkb_xerostomia": lkb_ntcp_from_dvh(dvh, "xerostomia-parotid", n_fractions=n_fractions,
                                                         alpha_beta_gy=alpha_beta_gy)}
    return {}


def _write_outputs(stage: Path, dvhs, grid: str, n_fractions: int | None, alpha_beta_gy: float) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = []
    for name, dvh in dvhs.items():
        row = {"roi": name, "grid": grid, **dvh.statistics(),
               **_ntcp_columns(name, dvh, n_fractions, alpha_beta_gy)}
        rows.append(row)
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(stage / "dvh_stats.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    top = max(dvh.max_gy for dvh in dvhs.values())
    doses = np.arange(0.0, top + 0.1 + 1e-9, 0.1)
    curves = {name: np.array([dvh.volume_at_dose_pct(d) for d in doses]) for name, dvh in dvhs.items()}
    with open(stage / "dvh_cumulative.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dose_gy"] + [f"{name}_volume_pct" for name in curves])
        for index, dose in enumerate(doses):
            writer.writerow([f"{dose:.1f}"] + [f"{curve[index]:.4f}" for curve in curves.values()])

    step = max(1, round(0.1 / dvhs[next(iter(dvhs))].bin_width_gy))
    n_bins = max(dvh.differential_cc.size for dvh in dvhs.values())
    n_bins += (-n_bins) % step
    width = step * next(iter(dvhs.values())).bin_width_gy
    coarse = {name: np.pad(dvh.differential_cc, (0, n_bins - dvh.differential_cc.size)).reshape(-1, step).sum(1)
              for name, dvh in dvhs.items()}
    with open(stage / "dvh_differential.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dose_from_gy", "dose_to_gy"] + [f"{name}_cc" for name in coarse])
        for index in range(n_bins // step):
            writer.writerow([f"{index * width:.2f}", f"{(index + 1) * width:.2f}"]
                            + [f"{values[index]:.5g}" for values in coarse.values()])

    figure, axis = plt.subplots(figsize=(8, 5), dpi=100)
    for name, curve in curves.items():
        axis.plot(doses, curve, label=f"{name} (mean {dvhs[name].mean_gy:.1f} Gy)")
    axis.set_xlabel("dose (Gy)")
    axis.set_ylabel("volume (%)")
    axis.set_title(f"Cumulative DVH ({grid} grid)")
    axis.set_ylim(0, 102)
    axis.set_xlim(0, max(top * 1.02, 1.0))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(stage / "dvh.png")
    plt.close(figure)
    return rows


def run(args: argparse.Namespace) -> int:
    from rtdeep.fileio import ensure_new_paths, staged_output

    out: Path = args.out
    ensure_new_paths([out / name for name in ("dvh_stats.csv", "dvh_cumulative.csv", "dvh_differential.csv",
                                              "dvh.png")])
    dvhs, grid, notes, n_fractions = _compute(args)
    with staged_output(out) as stage:
        rows = _write_outputs(stage, dvhs, grid, n_fractions, args.alpha_beta_gy)
    for line in notes:
        print(f"note: {line}")
    print(f"{'structure':<20} {'cc':>9} {'mean Gy':>8} {'D95 Gy':>8} {'D2 Gy':>8} {'V20 %':>7} {'uncov %':>7}")
    for row in rows:
        print(f"{row['roi'][:20]:<20} {row['volume_cc']:9.1f} {row['mean_gy']:8.2f} {row['D95_gy']:8.2f} "
              f"{row['D2_gy']:8.2f} {row['V20_pct']:7.1f} {row['uncovered_pct']:7.2f}")
    for row in rows:
        if "ntcp_logistic_mld" in row:
            fx = f"EQD2, {n_fractions} fractions, a/b {args.alpha_beta_gy:g} Gy" if n_fractions else "as stored"
            print(f"pneumonitis ({row['roi']}, MLD {row['mld_eqd2_gy']:.2f} Gy {fx}): QUANTEC logistic "
                  f"{100 * row['ntcp_logistic_mld']:.1f}%, LKB QUANTEC {100 * row['ntcp_lkb_pneumonitis_quantec']:.1f}%, "
                  f"LKB Seppenwoolde {100 * row['ntcp_lkb_pneumonitis_seppenwoolde']:.1f}%")
        if "ntcp_lkb_xerostomia" in row:
            print(f"xerostomia ({row['roi']}): LKB {100 * row['ntcp_lkb_xerostomia']:.1f}%")
    print(f"written: {out / 'dvh_stats.csv'}, {out / 'dvh_cumulative.csv'}, {out / 'dvh_differential.csv'}, "
          f"{out / 'dvh.png'}")
    return 0
