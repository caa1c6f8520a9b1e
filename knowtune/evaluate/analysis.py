"""Analyses of the controlled study: the linear model of accuracy on fitted Known / Unknown
examples (Gekhman et al. 2024, §5) and per-category epochs-to-fit."""

from __future__ import annotations

import numpy as np

from knowtune.probe.records import KNOWN


def fit_linear_model(points: list[tuple[float, float, float]]) -> dict:
    """OLS of Acc = β0 + β_kn·x_kn + β_unk·x_unk over (x_kn, x_unk, acc) points, with R²."""
    if len(points) < 3:
        return {"beta0": None, "beta_kn": None, "beta_unk": None, "r2": None, "n_points": len(points)}
    x = np.array([[1.0, kn, unk] for kn, unk, _ in points])
    y = np.array([acc for _, _, acc in points])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else None
    return {"beta0": float(beta[0]), "beta_kn": float(beta[1]), "beta_unk": float(beta[2]), "r2": r2, "n_points": len(points)}


def fitted_fractions(row: dict, size: int) -> tuple[float, float]:
    """(N_kn/|D|, N_unk/|D|) from one epoch's fitted counts per category."""
    fitted = row["fitted_by_group"]
    return sum(fitted.get(c, 0) for c in KNOWN) / size, fitted.get("Unknown", 0) / size


def epochs_to_fit(metrics: list[dict], groups: list[str], threshold: float = 0.5) -> dict[str, int | None]:
    """Per group, the first epoch whose fit reaches `threshold` (None if it never does)."""
    out: dict[str, int | None] = {}
    for g in groups:
        out[g] = next((m["epoch"] for m in metrics if m["fit_by_group"].get(g, -1) >= threshold), None)
    return out
