"""NTCP models (rtdeep.ntcp) against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rtdeep.dvh import dvh_from_samples
from rtdeep.ntcp import (
    LKB_PARAMETERS,
    eqd2_gy,
    geud_from_dvh,
    geud_gy,
    lkb_ntcp,
    lkb_ntcp_from_dvh,
    logistic_mld_ntcp,
    ntcp_report,
)


def test_quantec_logistic_mean_lung_dose_is_about_20_percent_at_20_gy():
    # by hand: -3.87 + 0.126 * 20 = -1.35; 1 / (1 + e^1.35) = 0.2059
    assert logistic_mld_ntcp(20.0) == pytest.approx(0.2059, abs=1e-4)
    # 50 % where b0 + b1 MLD = 0: MLD = 3.87 / 0.126 = 30.71 Gy
    assert logistic_mld_ntcp(3.87 / 0.126) == pytest.approx(0.5)
    assert logistic_mld_ntcp(5.0) < logistic_mld_ntcp(10.0) < logistic_mld_ntcp(30.0)


def test_lkb_by_hand():
    # QUANTEC pneumonitis, n = 1: gEUD = MLD; t = (20 - 31.4) / (0.45 * 31.4) = -0.8068; Phi(t) = 0.2099
    p = LKB_PARAMETERS["pneumonitis-quantec"]
    assert (p.td50_gy, p.m, p.n) == (31.4, 0.45, 1.0)
    assert lkb_ntcp(20.0, p.td50_gy, p.m) == pytest.approx(0.2099, abs=1e-4)
    assert lkb_ntcp(31.4, 31.4, 0.45) == pytest.approx(0.5)
    # one standard deviation above TD50: Phi(1) = 0.8413
    assert lkb_ntcp(31.4 * 1.45, 31.4, 0.45) == pytest.approx(0.8413, abs=1e-4)
    s = LKB_PARAMETERS["pneumonitis-seppenwoolde"]
    assert (s.td50_gy, s.m, s.n) == (30.8, 0.37, 0.99)
    x = LKB_PARAMETERS["xerostomia-parotid"]
    assert (x.td50_gy, x.m, x.n) == (39.9, 0.40, 1.0)
    # parotid mean dose 26 Gy: t = (26 - 39.9) / (0.4 * 39.9) = -0.8709; Phi = 0.1919
    assert lkb_ntcp(26.0, x.td50_gy, x.m) == pytest.approx(0.1919, abs=1e-4)


def test_geud_limits():
    dose = np.array([10.0, 20.0, 60.0])
    volume = np.array([0.5, 0.3, 0.2])
    assert geud_gy(dose, volume, 1.0) == pytest.approx(0.5 * 10 + 0.3 * 20 + 0.2 * 60)  # mean
    # n -> 0 (a -> inf) tends to the maximum; n = 0.5 is a quadratic mean
    assert geud_gy(dose, volume, 0.01) == pytest.approx(60.0, rel=0.05)
    assert geud_gy(dose, volume, 0.5) == pytest.approx(math.sqrt(0.5 * 100 + 0.3 * 400 + 0.2 * 3600))


def test_eqd2_by_hand():
    # 60 Gy in 30 fractions is already 2 Gy per fraction
    assert eqd2_gy(60.0, 30, 3.0) == pytest.approx(60.0)
    # SBRT 3 x 18 Gy, alpha/beta 3: 54 (18 + 3) / (2 + 3) = 226.8 Gy
    assert eqd2_gy(54.0, 3, 3.0) == pytest.approx(226.8)
    assert eqd2_gy(54.0, None, 3.0) == pytest.approx(54.0)
    with pytest.raises(ValueError):
        eqd2_gy(10.0, 0, 3.0)


def test_models_from_a_dvh_and_fractionation_matters():
    # a lung with half its volume at 10 Gy and half at 30 Gy: MLD 20 Gy
    dose = np.concatenate([np.full(500, 10.0), np.full(500, 30.0)])
    dvh = dvh_from_samples("Lungs-GTV", dose, 2.0)
    assert geud_from_dvh(dvh, 1.0) == pytest.approx(20.0)
    report = ntcp_report(dvh)
    assert report["mld_gy"] == pytest.approx(20.0)
    assert report["logistic_mld"] == pytest.approx(0.2059, abs=1e-3)
    assert report["lkb_pneumonitis-quantec"] == pytest.approx(0.2099, abs=2e-3)
    assert 0.0 < report["lkb_pneumonitis-seppenwoolde"] < 0.5
    # the same physical dose in 5 fractions is worth more: EQD2 of the bins, by hand
    # 10 Gy/5 fx: 10 (2 + 3) / 5 = 10; 30 Gy/5 fx: 30 (6 + 3) / 5 = 54; mean 32 Gy
    hypo = ntcp_report(dvh, n_fractions=5)
    assert hypo["mld_gy"] == pytest.approx(32.0, abs=0.05)
    assert hypo["logistic_mld"] > report["logistic_mld"]
    assert lkb_ntcp_from_dvh(dvh, "pneumonitis-quantec", n_fractions=5) == pytest.approx(
        lkb_ntcp(32.0, 31.4, 0.45), abs=2e-3)
