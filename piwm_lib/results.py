"""A sweep's results: one table row per grid point, paired comparisons with bootstrap intervals, and the paper's
claims checked against them (PIWM arXiv 2509.12437, Sec. 1 and 4)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .metrics import bootstrap_ci
from .sweep import SweepConfig, plan

FAILURES = ["vanish_per_100", "popup_per_100", "merge_per_100", "swap_per_100", "ego_vanish_per_100"]
SCORES = ["wo", "tec", "iec", "kir"]
COUNTS = ["others_recall", "ego_presence", "lane_commands", "lane_answered", "lane_stuck", "lane_unrequested",
          "speed_commands", "speed_answered"]


def load_metrics(cfg: SweepConfig) -> dict[tuple[str, str, str], dict]:
    """metrics.json of every finished evaluation cell, keyed by (model, mask, start)."""
    out = {}
    for c in plan(cfg):
        f = c.folder / "metrics.json"
        if c.kind == "evaluate" and f.exists():
            out[c.labels["model"], c.labels["mask"], c.labels["start"]] = json.loads(f.read_text())
    return out


def table(cfg: SweepConfig) -> pd.DataFrame:
    """One row per grid point: parameters, WO/TEC/IEC/KIR, failure rates and the command counts (mean, 95% interval
    over windows), PSNR, SSIM, FID, FVD and generation frames/s; points without a finished evaluation have NaNs."""
    got, rows = load_metrics(cfg), []
    for c in plan(cfg):
        if c.kind != "evaluate":
            continue
        key = (c.labels["model"], c.labels["mask"], c.labels["start"])
        row = {"model": key[0], "mask": key[1], "start": key[2], "run": c.run}
        m = got.get(key)
        if m is not None:
            ph, s = m["physics"][key[2]], key[2]
            row["params_M"] = (m["dynamics_params"] + m["upsampler_params"]) / 1e6
            row["windows"] = m["windows"]
            for k in SCORES + FAILURES + COUNTS:
                row[k], row[f"{k}_lo"], row[f"{k}_hi"] = ph[k]
            for k in ("psnr", "ssim"):
                row[k], row[f"{k}_lo"], row[f"{k}_hi"] = m[k][s]
            row.update(fid=m["fid"][s], fvd=m["fvd"][s], fps=m["generation_fps"][s])
        rows.append(row)
    return pd.DataFrame(rows)


def with_intervals(df: pd.DataFrame, cols: list[str], digits: int = 3) -> pd.DataFrame:
    """The table's `cols` as 'mean [lo, hi]' strings, for reading."""
    out = df[["model", "mask", "start"]].copy()
    for c in cols:
        if f"{c}_lo" in df:
            out[c] = [f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(m) else "n/a"
                      for m, lo, hi in zip(df[c], df[f"{c}_lo"], df[f"{c}_hi"])]
        elif c in df:
            out[c] = df[c].round(digits)
    return out


def per_window(metrics: dict, start: str, metric: str) -> np.ndarray:
    """Per-window values (N,) of one physics metric of an evaluation; 'failures_per_100' sums vanish..swap."""
    pw = metrics["per_window"][start]
    if metric == "failures_per_100":
        return np.sum([np.asarray(pw[k], float) for k in FAILURES], axis=0)
    return np.asarray(pw[metric], float)


def paired_difference(a: dict, b: dict, start_a: str, start_b: str, metric: str, n_boot: int = 2000,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over the same test windows and its paired percentile bootstrap interval (Efron 1979)."""
    va, vb = per_window(a, start_a, metric), per_window(b, start_b, metric)
    if va.shape != vb.shape:
        raise ValueError(f"paired comparison needs the same windows: {va.shape} vs {vb.shape} (same DATA_DIR, "
                         "HORIZON and MAX_WINDOWS in every evaluation)")
    return bootstrap_ci(va - vb, n_boot, seed=seed)


@dataclass(frozen=True)
class Claim:
    """A published comparison: a's `metric` beats b's (`higher` is better, or lower)."""

    key: str
    text: str  # the paper's statement
    a: tuple[str, str, str]  # (size role, mask, start); size role: "large", "small" or "same"
    b: tuple[str, str, str]
    metric: str
    higher: bool


CLAIMS = [
    Claim("piwm_vs_baseline", "At the same size PIWM (Soft Mask + Warm Start) beats the DIAMOND baseline (no mask, "
          "cold start): +60.6% WO at 400M", ("same", "soft", "warm"), ("same", "none", "cold"), "wo", True),
    Claim("mask_alone", "The Soft Mask alone (both cold) improves physical consistency", ("same", "soft", "cold"),
          ("same", "none", "cold"), "wo", True),
    Claim("mask_fid", "The Soft Mask alone lowers FID (automatic metric of frame realism)", ("same", "soft", "cold"),
          ("same", "none", "cold"), "fid", False),
    Claim("small_vs_large", "The smallest PIWM (130M, soft, warm) beats the 400M baseline by 7.4% WO",
          ("small", "soft", "warm"), ("large", "none", "cold"), "wo", True),
    Claim("small_faster", "... with 28% faster inference", ("small", "soft", "warm"), ("large", "none", "cold"),
          "fps", True),
    Claim("stuck", "The Soft Mask fixes the Hard Mask's 'Stuck' failure (the ego hardly changes lanes)",
          ("same", "soft", "warm"), ("same", "hard", "warm"), "lane_stuck", False),
    Claim("no_mask_failures", "Without a mask vehicles vanish, merge or pop up", ("same", "none", "cold"),
          ("same", "soft", "cold"), "failures_per_100", True),
    Claim("warm_tec", "Warm Start improves temporal consistency (TEC) without retraining", ("same", "soft", "warm"),
          ("same", "soft", "cold"), "tec", True),
    Claim("warm_fvd", "Warm Start lowers FVD", ("same", "soft", "warm"), ("same", "soft", "cold"), "fvd", False),
    Claim("warm_low", "Extra: Warm Start on a schedule from a lower sigma_max vs the published one",
          ("same", "soft", "warm_low"), ("same", "soft", "warm"), "wo", True),
    Claim("gt_mask", "Extra (the paper's open question): a mask from simulator states instead of render colours",
          ("same", "gt", "warm"), ("same", "soft", "warm"), "wo", True),
    Claim("loss_weighting", "Extra: weighting the loss by the Soft Mask", ("same", "soft_weighted", "warm"),
          ("same", "soft", "warm"), "wo", True),
]


def _sizes(got: dict) -> list[str]:
    """Model sizes present, smallest first (by parameter count)."""
    size = {k[0]: v["dynamics_params"] + v["upsampler_params"] for k, v in got.items()}
    return sorted(size, key=size.get)


def check_claims(cfg: SweepConfig, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each claim of CLAIMS on this sweep: the two cells, means, the paired difference a - b with its interval and the
    verdict: 'supported' / 'contradicted' when the interval excludes 0, 'inconclusive', or 'not in this grid'."""
    got, rows = load_metrics(cfg), []
    sizes = _sizes(got)
    for cl in CLAIMS:
        row = {"claim": cl.key, "paper": cl.text, "metric": cl.metric, "verdict": "not in this grid"}
        pairs = [(s, s) for s in reversed(sizes)] if cl.a[0] == "same" else \
            [(sizes[0], sizes[-1])] if len(sizes) > 1 else []
        for sa, sb in pairs:
            ka, kb = (sa, *cl.a[1:]), (sb, *cl.b[1:])
            if ka in got and kb in got:
                row.update(_compare(cl, ka, kb, got[ka], got[kb], n_boot, seed))
                break
        rows.append(row)
    return pd.DataFrame(rows)


def _compare(cl: Claim, ka: tuple, kb: tuple, a: dict, b: dict, n_boot: int, seed: int) -> dict:
    """One claim's numbers and verdict."""
    out = {"a": "/".join(ka), "b": "/".join(kb)}
    if cl.metric in ("fps", "fid", "fvd"):  # one number per run: no interval
        key = "generation_fps" if cl.metric == "fps" else cl.metric
        va, vb = a[key][ka[2]], b[key][kb[2]]
        better = (va > vb) == cl.higher
        out.update(a_mean=va, b_mean=vb, diff=va - vb, lo=np.nan, hi=np.nan, relative=va / vb - 1 if vb else np.nan,
                   verdict=("supported" if better else "contradicted") + " (one number per run, no interval)")
        return out
    va, vb = np.nanmean(per_window(a, ka[2], cl.metric)), np.nanmean(per_window(b, kb[2], cl.metric))
    d, lo, hi = paired_difference(a, b, ka[2], kb[2], cl.metric, n_boot, seed)
    sign = 1 if cl.higher else -1
    verdict = "supported" if sign * lo > 0 and sign * hi > 0 else \
        "contradicted" if sign * lo < 0 and sign * hi < 0 else "inconclusive (the interval holds 0)"
    if not (np.nan_to_num(per_window(a, ka[2], "others_recall")).any()
            or np.nan_to_num(per_window(b, kb[2], "others_recall")).any()):
        verdict = "not measurable: neither cell draws a car the detector matches to a real one"
    out.update(a_mean=va, b_mean=vb, diff=d, lo=lo, hi=hi, relative=va / vb - 1 if vb else np.nan, verdict=verdict)
    return out


def paragraph(row: pd.Series) -> str:
    """One claim's verdict in words, with the numbers (markdown)."""
    if row["verdict"] == "not in this grid":
        return f"**{row['paper']}**: not in this grid (add the cells it compares to test it)."
    interval = f" (95% paired interval [{row['lo']:+.3f}, {row['hi']:+.3f}])" if np.isfinite(row["lo"]) else ""
    relative = f", relative {100 * row['relative']:+.1f}%" if np.isfinite(row["relative"]) else ""
    return (f"**{row['paper']}**: {row['metric']} {row['a_mean']:.3f} for {row['a']} vs {row['b_mean']:.3f} for "
            f"{row['b']}, difference {row['diff']:+.3f}{interval}{relative}: *{row['verdict']}*.")
