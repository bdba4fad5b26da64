#!/usr/bin/env python3
"""Redraw setdino's figures with matplotlib, for side-by-side review against the Rust PNGs.

`setdino` draws its eval, experiment and demo figures with plotters (src/plot/) from TSV files it
saves beside them. This script reads the same TSVs and draws the same figures independently with
matplotlib, so a reviewer can open `pr_curve.png` and `pr_curve.matplotlib.png` next to each other
and check that the Rust figure shows what the numbers say. It is a reviewing aid only: nothing in
the Rust program reads its output.

Usage:
    python3 scripts/plot_matplotlib.py DIR [--out OUTDIR]

DIR and its subdirectories (up to 3 levels, as `setdino report` does) are searched for the known
TSVs: pr_curve.tsv, similarity_hist.tsv, adjacency.tsv (+ adjacency_genes.tsv), pca.tsv,
comparison.tsv and curves.tsv. Each one found gives `<stem>.matplotlib.png` beside it, or under
OUTDIR at the same relative path with --out. Every file written is printed; the exit status is 1
when no known TSV was found. Needs matplotlib and numpy.
"""
import argparse
import csv
import json
import math
import os
import sys
from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TAB10 = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
         "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]  # src/plot/mod.rs PALETTE order
OTHERS = [TAB10[k] for k in (2, 3, 4, 6, 8, 9)]  # colours left for methods that are not known ones
METRICS = [("batch_knn5", "batch KNN@5", True), ("batch_gc5", "batch GC@5", True),
           ("repro_knn5", "repro KNN@5", False), ("repro_map", "repro mAP", False),
           ("recall_top5", "recall@5%", False), ("recall_top10", "recall@10%", False)]
CEILING = "(ceiling)"
DEPTH = 3


def read_tsv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def num(s):
    """A TSV number: None for an empty field; float() reads NaN/nan/inf itself."""
    s = (s or "").strip()
    return None if s == "" else float(s)


def finite(v):
    return v is not None and math.isfinite(v)


KNOWN = [("set-dino", TAB10[1]), ("setdino", TAB10[1]), ("dino", TAB10[0]),
         ("random", TAB10[7]), ("engineered", TAB10[5])]  # first match wins


def method_colours(labels):
    """Same rule as method_colour in src/plot/mod.rs: known methods by name, others in order."""
    out, unknown = [], 0
    for label in labels:
        c = next((c for key, c in KNOWN if key in label.lower()), None)
        if c is None:
            c, unknown = OTHERS[unknown % len(OTHERS)], unknown + 1
        out.append(c)
    return out


def in_order(values):
    return list(dict.fromkeys(values))


def eval_label(d):
    try:
        with open(os.path.join(d, "run.json")) as f:
            return json.load(f)["label"]
    except (OSError, ValueError, KeyError, TypeError):
        return os.path.basename(os.path.abspath(d))


def style(ax, legend=None, **kw):
    """Light grid behind the data; the legend (if any) in a strip right of the axes, as in Rust."""
    ax.grid(True, color="#e1e1e1", linewidth=0.8)
    ax.set_axisbelow(True)
    if legend:
        ax.legend(*legend, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False, **kw)


def note(ax, text):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def fig_pr(d):
    rows = [r for r in read_tsv(os.path.join(d, "pr_curve.tsv"))
            if finite(num(r["precision"])) and finite(num(r["recall"]))]
    fig, ax = plt.subplots(figsize=(8.2, 4.8))
    ax.set_title(f"Precision–recall of known complex pairs: {eval_label(d)}")
    ax.set_xlim(0, 1)
    if not rows:
        note(ax, "no related pair was profiled: no curve")
        return fig
    rec, prec = [num(r["recall"]) for r in rows], [num(r["precision"]) for r in rows]
    nulls, related = num(rows[0]["null_pairs"]), num(rows[0]["related_pairs"])
    chance = related / nulls if nulls else None
    ax.plot(rec, prec, "-o", color=TAB10[0], lw=2, ms=4, label="precision, recall")
    if chance is not None:
        ax.axhline(chance, ls="--", color="#787878", lw=1.5, label=f"chance ({100 * chance:.2f} %)")
    for r, x, y in zip(rows, rec, prec):
        if int(float(r["top_percent"])) in (1, 5, 10, 20):
            ax.plot(x, y, "o", ms=9, mfc="none", mec=TAB10[0], mew=1.5)
            ax.annotate(f"top {int(float(r['top_percent']))} %", (x, y), xytext=(7, 6),
                        textcoords="offset points", fontsize=9)
    ax.set_ylim(0, min(max(max(prec + [chance or 0]) * 1.18, 1e-3), 1.0))
    ax.set_xlabel("recall (fraction of related pairs called)")
    ax.set_ylabel("precision (fraction of called pairs related)")
    style(ax, legend=ax.get_legend_handles_labels())
    fig.tight_layout()
    return fig


def fig_hist(d):
    rows = read_tsv(os.path.join(d, "similarity_hist.tsv"))
    lo, hi = np.array([[num(r["bin_lo"]), num(r["bin_hi"])] for r in rows]).T
    nc, rc = (np.array([num(r[k]) for r in rows]) for k in ("null_count", "related_count"))
    nd, rd = (np.array([num(r[k]) for r in rows]) for k in ("null_density", "related_density"))
    fig, ax = plt.subplots(figsize=(8.0, 4.4))
    ax.set_title(f"Gene-pair similarities, related vs all: {eval_label(d)}")
    used = (nc + rc) > 0
    if not used.any():
        note(ax, "no gene pairs")
        return fig
    pad = 0.05 * (hi[used].max() - lo[used].min())
    for dens, n, colour, name in [(nd, nc, "#787878", "all gene pairs"),
                                  (rd, rc, TAB10[3], "known related pairs")]:
        ax.bar(lo, dens, width=hi - lo, align="edge", color=colour, alpha=0.3, lw=0)
        ax.stairs(dens, np.append(lo, hi[-1]), color=colour, lw=2, label=f"{name} (n = {int(n.sum())})")
    ax.set_xlim(max(lo[used].min() - pad, -1.0), min(hi[used].max() + pad, 1.0))
    ax.set_ylim(0, max(nd[used].max(), rd[used].max()) * 1.08 or 1e-9)
    ax.set_xlabel("cosine similarity of two genes' consensus profiles")
    ax.set_ylabel("density (per unit of cosine)")
    style(ax, legend=ax.get_legend_handles_labels())
    fig.tight_layout()
    return fig


def blocks(complexes):
    out = []  # (start, end, name), end exclusive
    for k, c in enumerate(complexes):
        if out and out[-1][2] == c:
            out[-1][1] = k + 1
        else:
            out.append([k, k + 1, c])
    return out


def fig_adjacency(d):
    genes = sorted(read_tsv(os.path.join(d, "adjacency_genes.tsv")), key=lambda g: int(g["index"]))
    pairs = read_tsv(os.path.join(d, "adjacency.tsv"))
    m = len(genes)
    fig, axes = plt.subplots(1, 2, figsize=(11.2, 5.8))
    fig.suptitle(f"Known complexes vs predicted pairs: {eval_label(d)}")
    if m < 2:
        note(axes[0], "fewer than two profiled genes in known complexes")
        return fig
    bl = blocks([g["complex"] for g in genes])
    for ax, key, colour, caption in [(axes[0], "related", TAB10[3], "known related pairs"),
                                     (axes[1], "predicted", TAB10[0], "predicted: top 5 % of similarities")]:
        img = np.ones((m, m, 3))
        for a, e, _ in bl:
            img[a:e, a:e] = 235 / 255
        on = [(int(p["i"]), int(p["j"])) for p in pairs if p[key].strip() == "1"]
        rgb = matplotlib.colors.to_rgb(colour)
        for i, j in on:
            img[i, j] = img[j, i] = rgb
        ax.imshow(img, interpolation="nearest", extent=(0, m, m, 0))
        ax.set_title(f"{caption} ({len(on)})", fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_color("#5a5a5a")
    axes[0].set_yticks([(a + e) / 2 for a, e, _ in bl])
    axes[0].set_yticklabels([n if len(n) <= 26 else n[:26] + "…" for _, _, n in bl], fontsize=8)
    fig.text(0.5, 0.02, f"{m} genes in complex order; shaded squares: {len(bl)} complexes",
             ha="center", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def fig_pca(d):
    rows = read_tsv(os.path.join(d, "pca.tsv"))
    fig, ax = plt.subplots(figsize=(9.0, 5.6))
    ax.set_title(f"Gene profiles on their first two principal components: {eval_label(d)}")
    if len(rows) < 2:
        note(ax, "fewer than two gene profiles")
        return fig
    counts = Counter(r["complex"] for r in rows if r["complex"])
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
    palette = [c for c in TAB10 if c != TAB10[7]]
    pts = lambda sel: ([num(r["pc1"]) for r in sel], [num(r["pc2"]) for r in sel])  # noqa: E731
    none = [r for r in rows if not r["complex"]]
    other = [r for r in rows if r["complex"] and r["complex"] not in dict(top)]
    handles = []  # legend: the top complexes, then the others, then no complex (as in Rust)
    for k, (name, n) in enumerate(top):
        short = name if len(name) <= 24 else name[:24] + "…"
        sel = [r for r in rows if r["complex"] == name]
        handles.append(ax.scatter(*pts(sel), s=24, color=palette[k], label=f"{short} ({n})", zorder=4))
    for sel, colour, label, z in [(other, "#aaaaaa", "other complexes", 3),
                                  (none, "#d7d7d7", "in no known complex", 2)]:
        if sel:  # below the coloured ones; no complex lowest
            handles.append(ax.scatter(*pts(sel), s=14, color=colour, label=f"{label} ({len(sel)})", zorder=z))
    ax.set_xlabel(f"PC1 ({100 * num(rows[0]['pc1_explained']):.1f} % of variance)")
    ax.set_ylabel(f"PC2 ({100 * num(rows[0]['pc2_explained']):.1f} % of variance)")
    style(ax, legend=(handles, [h.get_label() for h in handles]), title="complex (genes)", fontsize=9)
    fig.tight_layout()
    return fig


def fig_comparison(d):
    rows = read_tsv(os.path.join(d, "comparison.tsv"))
    methods = in_order(r["method"] for r in rows if r["method"] != CEILING)
    colours = method_colours(methods)
    fig, axes = plt.subplots(2, 3, figsize=(13.5, 6.8))
    fig.suptitle("Methods compared on the held-out plates (Table 1 metrics)")
    if not methods:
        note(axes[0, 0], "no method was evaluated")
        return fig
    for ax, (key, name, lower) in zip(axes.flat, METRICS):
        for x, (m, c) in enumerate(zip(methods, colours)):
            v = np.array([100 * num(r["value"]) for r in rows
                          if r["method"] == m and r["metric"] == key and finite(num(r["value"]))])
            if v.size == 0:
                ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=9)
                continue
            mean, sd = v.mean(), (v.std(ddof=1) if v.size > 1 else 0.0)
            ax.bar(x, mean, width=0.68, color=c, alpha=0.75)
            if v.size > 1:
                ax.errorbar(x, mean, yerr=sd, color="black", capsize=5, lw=1)
            dx = np.linspace(-0.18, 0.18, v.size) if v.size > 1 else np.zeros(1)
            ax.scatter(x + dx, v, s=18, facecolor="white", edgecolor="black", zorder=3)
            ax.annotate(f"{mean:.1f}", (x, max(mean + sd, v.max())), xytext=(0, 4),
                        textcoords="offset points", ha="center", fontsize=9)
        ceil = [100 * num(r["value"]) for r in rows
                if r["method"] == CEILING and r["metric"] == key and finite(num(r["value"]))]
        if ceil:
            ax.axhline(ceil[0], ls="--", color="#5a5a5a", lw=1)
        ax.set_title(f"{name} (%)  {'↓ lower' if lower else '↑ higher'} is better", fontsize=10)
        ax.set_xticks([])
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1] * 1.1, 1.0))
        style(ax)
        ax.grid(False, axis="x")
    seeds = {m: sum(1 for r in rows if r["method"] == m and r["metric"] == METRICS[0][0]) for m in methods}
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.75) for c in colours]
    labels = [f"{m} ({seeds[m]} seed{'' if seeds[m] == 1 else 's'})" for m in methods]
    handles.append(plt.Line2D([], [], ls="--", color="#5a5a5a"))
    labels.append("recall ceiling")
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(0.80, 0.88), frameon=False,
               title="bar: mean; whisker: ± s.d.; dots: seeds", fontsize=9, title_fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.79, 0.96))
    return fig


def fig_curves(d):
    rows = read_tsv(os.path.join(d, "curves.tsv"))
    methods = in_order(r["method"] for r in rows)
    colours = method_colours(methods)
    recall = any(num(r.get("val_recall5")) is not None for r in rows)
    panels = [("loss", "loss", "cross-entropy (nats)"),
              ("entropy_over_lnk", "teacher entropy / ln K", "1 = uniform teacher (collapse)"),
              ("kl", "KL(teacher ‖ student)", "nats"),
              ("val_recall5", "validation: complex recall at 5 %", "fraction of related pairs") if recall
              else ("val_top5_gene", "validation: gene KNN@5", "fraction of cells")]
    fig, axes = plt.subplots(2, 2, figsize=(12.0, 7.2))
    fig.suptitle("Training curves")
    if not methods:
        note(axes[0, 0], "no logged step")
        return fig
    for ax, (key, title, ydesc) in zip(axes.flat, panels):
        for m, c in zip(methods, colours):
            for s in sorted({r["seed"] for r in rows if r["method"] == m}, key=lambda s: num(s) or 0):
                pts = sorted((num(r["step"]), num(r.get(key))) for r in rows
                             if r["method"] == m and r["seed"] == s and finite(num(r.get(key))))
                if pts:
                    x, y = zip(*pts)
                    ax.plot(x, y, color=c, lw=1.5, marker="o" if len(pts) <= 30 else None, ms=4)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("step")
        ax.set_ylabel(ydesc, fontsize=9)
        style(ax)
    handles = [plt.Line2D([], [], color=c, lw=2) for c in colours]
    fig.legend(handles, methods, loc="upper left", bbox_to_anchor=(0.82, 0.88), frameon=False,
               title="one line per seed")
    fig.tight_layout(rect=(0, 0, 0.81, 0.96))
    return fig


FIGURES = [("pr_curve", fig_pr, ()), ("similarity_hist", fig_hist, ()),
           ("adjacency", fig_adjacency, ("adjacency_genes.tsv",)), ("pca", fig_pca, ()),
           ("comparison", fig_comparison, ()), ("curves", fig_curves, ())]


def directories(root, depth=0):
    yield root
    if depth < DEPTH:
        for name in sorted(os.listdir(root)):
            sub = os.path.join(root, name)
            if os.path.isdir(sub):
                yield from directories(sub, depth + 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="directory holding setdino's TSVs (searched 3 levels down)")
    ap.add_argument("--out", help="write the PNGs here, mirroring DIR's layout, instead of beside the TSVs")
    args = ap.parse_args()
    if not os.path.isdir(args.dir):
        sys.exit(f"{args.dir}: not a directory")
    written, failed = 0, 0
    for d in directories(args.dir):
        for stem, draw, extra in FIGURES:
            if not all(os.path.isfile(os.path.join(d, f)) for f in (stem + ".tsv",) + extra):
                continue
            out_dir = os.path.join(args.out, os.path.relpath(d, args.dir)) if args.out else d
            os.makedirs(out_dir, exist_ok=True)
            path = os.path.normpath(os.path.join(out_dir, stem + ".matplotlib.png"))
            try:
                fig = draw(d)
                fig.savefig(path, dpi=100)
                plt.close(fig)
            except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
                print(f"error: {os.path.join(d, stem + '.tsv')}: {type(e).__name__}: {e}", file=sys.stderr)
                plt.close("all")
                failed += 1
                continue
            print(path)
            written += 1
    if failed:
        sys.exit(f"{failed} figure(s) could not be drawn (see above); {written} written")
    if not written:
        sys.exit(f"{args.dir}: no known TSV (pr_curve, similarity_hist, adjacency, pca, comparison, curves) "
                 f"found within {DEPTH} levels")


if __name__ == "__main__":
    main()
