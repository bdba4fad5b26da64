#!/usr/bin/env python3
"""Cross-check `setdino eval` against the reference libraries on the profiles it dumped.

    setdino eval --features STEM --complexes FILE --out OUT --dump-profiles
    python tests/reference/cross_check_eval.py OUT            # reads OUT/profiles and OUT/metrics.json

or, to make a small screen, run setdino on it and check, in one go:

    python tests/reference/cross_check_eval.py --generate /tmp/xc --setdino target/release/setdino

Recomputes from OUT/profiles (batch_profiles, consensus_profiles, related_pairs, dump.json):
  repro_map            copairs.map.average_precision (pos_sameby gene|sgRNA, pos_diffby batch,
                       neg_diffby gene, cosine), averaged over non-NTC queries with a positive
  batch_gc5            scib.metrics.graph_connectivity on scanpy neighbours (n_neighbors=6, cosine,
                       exact sklearn search)
  batch_knn5,          exact cosine 5-NN (ties at the last place to the lower row) and the vote of
  repro_knn5           evaluation.md §2, reimplemented here with numpy (no library defines the tie rules)
  recall2_5/10         EFAAR compute_recall (efaar_benchmarking if installed, else its code, reproduced)
  recall_top5/10       the one-tailed reading: searchsorted(null, q, "left") / |null| >= 1 - p
  pr_auc               sklearn.metrics.average_precision_score over all gene pairs
  ks                   scipy.stats.ks_2samp(query, null).statistic
and compares each with metrics.json at --tol (default 1e-6). Exit status 1 on any mismatch.
Needs numpy, pandas, scipy, scikit-learn, copairs, scanpy, scib (pip install copairs scib); a metric
whose library is missing is reported as SKIP. CI does not run this script.
"""
import argparse
import warnings
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd

NTC = "__NTC__"
warnings.filterwarnings("ignore", category=FutureWarning)


def load(dump):
    x = np.load(os.path.join(dump, "batch_profiles.npy")).astype(np.float64)
    meta = pd.read_csv(os.path.join(dump, "batch_profiles.tsv"), sep="\t", dtype=str, keep_default_na=False)
    meta["is_ntc"] = meta["is_ntc"] == "1"
    meta.loc[meta.is_ntc, "gene"] = NTC
    c = np.load(os.path.join(dump, "consensus_profiles.npy")).astype(np.float64)
    cmeta = pd.read_csv(os.path.join(dump, "consensus_profiles.tsv"), sep="\t", dtype=str, keep_default_na=False)
    pairs = pd.read_csv(os.path.join(dump, "related_pairs.tsv"), sep="\t", dtype=str, keep_default_na=False)
    with open(os.path.join(dump, "dump.json")) as f:
        info = json.load(f)
    return x, meta, c, cmeta, pairs, info


def unit(x):
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(n < 1e-12, 0.0, x / np.where(n < 1e-12, 1.0, n))


def knn_lists(x, k=5):
    z = unit(x)
    s = z @ z.T
    n = len(x)
    out = []
    for i in range(n):
        row = s[i].copy()
        cand = np.array([j for j in range(n) if j != i])
        order = np.lexsort((cand, -row[cand]))[:k]  # similarity desc, then lower index
        out.append([(int(cand[o]), float(row[cand[o]])) for o in order])
    return out


def vote(labels, sims):
    tally = {}
    for p, (l, s) in enumerate(zip(labels, sims)):
        c, t, first = tally.get(l, (0, 0.0, p))
        tally[l] = (c + 1, t + s, first)
    return max(tally.items(), key=lambda kv: (kv[1][0], kv[1][1], -kv[1][2]))[0]


def knn_acc(lists, labels, query):
    hits = [vote([labels[j] for j, _ in lists[i]], [s for _, s in lists[i]]) == labels[i]
            for i in range(len(lists)) if query[i]]
    return float(np.mean(hits)) if hits else float("nan")


def repro_map_copairs(x, meta, level):
    from copairs.map import average_precision
    key = "sgRNA" if level == "sgrna" else "gene"
    m = meta[["gene", "sgRNA", "batch"]].copy().reset_index(drop=True)
    res = average_precision(m, x, pos_sameby=[key], pos_diffby=["batch"], neg_sameby=[],
                            neg_diffby=["gene"], distance="cosine")
    ap = res["average_precision"].to_numpy()
    keep = (~meta.is_ntc.to_numpy()) & np.isfinite(ap)
    return float(ap[keep].mean())


def gc_scib(x, meta):
    import anndata as ad
    import scanpy as sc
    import scib
    a = ad.AnnData(X=x.astype(np.float64), obs=pd.DataFrame({"batch": pd.Categorical(meta.batch.to_numpy())},
                                                             index=[str(i) for i in range(len(x))]))
    sc.pp.neighbors(a, n_neighbors=6, use_rep="X", metric="cosine", transformer="sklearn")
    return float(scib.metrics.graph_connectivity(a, label_key="batch"))


def efaar_compute_recall(null, query, pairs):
    try:
        from efaar_benchmarking.benchmarking import compute_recall  # noqa: F401
        return compute_recall(null, query, pairs), "efaar_benchmarking"
    except Exception:
        pass
    # efaar_benchmarking/benchmarking.py: compute_recall, reproduced.
    null = np.sort(null)
    left = np.searchsorted(null, query, side="left") / len(null)
    right = np.searchsorted(null, query, side="right") / len(null)
    out = {}
    for pair in pairs:
        lo, hi = np.min(pair), np.max(pair)
        out[f"recall_{lo}_{hi}"] = sum((right <= lo) | (left >= hi)) / len(query)
    return out, "EFAAR compute_recall (reproduced)"


def recall_metrics(c, cmeta, pairs):
    z = unit(c)
    s = z @ z.T
    iu = np.triu_indices(len(c), 1)
    null = s[iu]
    idx = {g: i for i, g in enumerate(cmeta.gene)}
    q = np.array([s[idx[a], idx[b]] for a, b in zip(pairs.gene1, pairs.gene2)])
    out = {}
    r, src = efaar_compute_recall(null, q, [(0.05, 0.95), (0.1, 0.9)])
    out["recall2_5"], out["recall2_10"] = r["recall_0.05_0.95"], r["recall_0.1_0.9"]
    srt = np.sort(null)
    left = np.searchsorted(srt, q, side="left") / len(srt)
    out["recall_top5"] = float(np.mean(left >= 0.95))
    out["recall_top10"] = float(np.mean(left >= 0.9))
    from sklearn.metrics import average_precision_score
    related = np.zeros((len(c), len(c)), dtype=bool)
    for a, b in zip(pairs.gene1, pairs.gene2):
        related[idx[a], idx[b]] = related[idx[b], idx[a]] = True
    out["pr_auc"] = float(average_precision_score(related[iu], null))
    from scipy.stats import ks_2samp
    out["ks"] = float(ks_2samp(q, null).statistic)
    return out, src


def generate(root, genes=40, batches=6, cells=6, d=16, seed=0):
    """A small screen: gene effects shared within complexes of 4, well offsets, NTC cells per well."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    comp = rng.normal(size=(genes // 4 + 1, d))
    eff = np.array([comp[g // 4] + 0.8 * rng.normal(size=d) for g in range(genes)])
    rows, x = [], []
    for b in range(batches):
        off = 0.7 * rng.normal(size=d)
        for g in range(genes + 1):
            ntc = g == genes
            for c in range(cells * (4 if ntc else 1)):
                rows.append((f"P{b // 3}", f"W{b % 3}", "0", "nontargeting" if ntc else f"G{g}",
                             f"ntc_{c % 3}" if ntc else f"G{g}_{c % 2}", "1" if ntc else "0"))
                x.append((0 if ntc else eff[g]) + off + rng.normal(size=d))
    np.save(os.path.join(root, "cells.npy"), np.asarray(x, dtype=np.float32))
    pd.DataFrame(rows, columns=["plate", "well", "tile", "gene", "sgRNA", "is_ntc"]).to_csv(
        os.path.join(root, "cells.tsv"), sep="\t", index=False)
    with open(os.path.join(root, "clusters.tsv"), "w") as f:
        for k in range(genes // 4):
            f.write(f"complex{k}\t" + " ".join(f"G{4 * k + i}" for i in range(4)) + " NOT_SCREENED\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", help="eval output directory (holds metrics.json and profiles/)")
    ap.add_argument("--profiles", help="dump directory (default OUT/profiles)")
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--generate", metavar="DIR", help="make a small screen in DIR, run setdino eval on it")
    ap.add_argument("--setdino", default="target/release/setdino", help="binary for --generate")
    ap.add_argument("--eval-args", default="", help="extra arguments for setdino eval with --generate")
    a = ap.parse_args()
    if a.generate:
        generate(a.generate)
        a.out = os.path.join(a.generate, "eval")
        cmd = [a.setdino, "eval", "--features", os.path.join(a.generate, "cells"), "--complexes",
               os.path.join(a.generate, "clusters.tsv"), "--out", a.out, "--dump-profiles", "--quiet"]
        cmd += a.eval_args.split()
        print("$", " ".join(cmd))
        subprocess.run(cmd, check=True)
    if not a.out:
        ap.error("give OUT or --generate DIR")
    dump = a.profiles or os.path.join(a.out, "profiles")
    with open(os.path.join(a.out, "metrics.json")) as f:
        got = json.load(f)
    x, meta, c, cmeta, pairs, info = load(dump)
    level = info["level"]
    want, src = {}, {}
    lists = knn_lists(x)
    want["batch_knn5"] = knn_acc(lists, list(meta.batch), [True] * len(x))
    rlab = list(meta.sgRNA if level == "sgrna" else meta.gene)
    rlab = [NTC + s if n else s for s, n in zip(rlab, meta.is_ntc)] if level == "sgrna" else rlab
    want["repro_knn5"] = knn_acc(lists, rlab, list(~meta.is_ntc))
    src["batch_knn5"] = src["repro_knn5"] = "numpy exact kNN + evaluation.md vote"
    for key, fn, lib in [("repro_map", lambda: repro_map_copairs(x, meta, level), "copairs"),
                         ("batch_gc5", lambda: gc_scib(x, meta), "scib + scanpy")]:
        try:
            want[key], src[key] = fn(), lib
        except ImportError as e:
            print(f"SKIP {key}: {e}")
    r, rsrc = recall_metrics(c, cmeta, pairs)
    for k, v in r.items():
        want[k] = v
        src[k] = rsrc if k.startswith("recall2") else ("sklearn" if k == "pr_auc" else
                                                        "scipy" if k == "ks" else "numpy searchsorted")
    bad = 0
    print(f"{'metric':<13} {'setdino':>12} {'reference':>12} {'|diff|':>9}  source")
    for k, v in want.items():
        g = got[k]
        g = float("nan") if g is None else g
        d = abs(g - v)
        ok = d <= a.tol or (np.isnan(g) and np.isnan(v))
        bad += not ok
        print(f"{k:<13} {g:12.8f} {v:12.8f} {d:9.2e}  {src[k]}{'' if ok else '   MISMATCH'}")
    print(f"{len(want) - bad} passed, {bad} failed")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
