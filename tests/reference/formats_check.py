"""Independent check of setdino's formats with the libraries users load them with.

1. A screen is written twice by independent writers: TIFF tiles (tifffile) + a CSV cell table (pandas), and
   OME-Zarr HCS plates (ome-zarr-py, NGFF 0.4 with Blosc and 0.5 with zstd, channels named by omero labels
   and stored in another order than the TIFF pages) + a Parquet cell table (pandas/pyarrow, Brieflow-like
   column names mapped with --columns, a categorical column, NaNs, a pandas index).
   `setdino ingest` of both must give the same crops and metadata (`store export`, compared with numpy
   and pandas), and `store export --format parquet` must hold the same table as the TSV.
2. `setdino features --format npy|parquet|anndata` and `setdino embed --format npy|parquet|anndata` (after a
   2-step training run) must hold the same matrix and cell table when opened with numpy + pandas,
   `pd.read_parquet` and `anndata.read_zarr`.
3. `setdino eval --dump-profiles --format parquet|anndata` must hold the npy dump's profiles.

Run (needs numpy, pandas, pyarrow, tifffile, zarr, ome-zarr, anndata):
    python tests/reference/formats_check.py target/release/setdino [workdir]
Prints one line per check and ALL OK; exit status 1 at the first difference.
"""
import glob
import os
import subprocess
import sys
import tempfile

import anndata
import numpy as np
import pandas as pd
import tifffile
import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

exe = os.path.abspath(sys.argv[1])
work = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp()
os.makedirs(work, exist_ok=True)
rng = np.random.default_rng(3)
H, W, CROP = 120, 100, 32
LABELS = ["DAPI", "tubulin", "actin"]
ZARR_ORDER = [2, 0, 1]  # the OME-Zarr images store actin, DAPI, tubulin; ingest picks them by label


def run(*args):
    r = subprocess.run([exe, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAIL: setdino {' '.join(map(str, args))}\n{r.stderr}")
    return r


def ok(what):
    print("ok  ", what)


def same(a, b, what):
    if not np.array_equal(np.asarray(a), np.asarray(b)):
        sys.exit(f"FAIL: {what}")


# 1. The screen, written twice. The OME-Zarr copy is one HCS plate per plate (plate.zarr/ROW/COL/FIELD, the
# layout of ome-zarr-py's write_plate_metadata / write_well_metadata), P1 in NGFF 0.4 (Zarr V2, Blosc) and
# P2 in NGFF 0.5 (Zarr V3, zstd); a tile is a field.
tiles_tiff, tiles_zarr, cells = [], [], []
genes = ["nontargeting", "G1", "G2", "G3"]
WELLS = {"A1": ("A", "1"), "B2": ("B", "2")}
for plate in ["P1", "P2"]:
    v5 = plate == "P2"
    fmt = FormatV05() if v5 else FormatV04()
    proot = zarr.open_group(os.path.join(work, plate + ".zarr"), mode="w", zarr_format=3 if v5 else 2)
    write_plate_metadata(proot, ["A", "B"], ["1", "2"], [f"{r}/{c}" for r, c in WELLS.values()], fmt=fmt, field_count=2)
    for well, (row, col) in WELLS.items():
        wgroup = proot.require_group(row).require_group(col)
        write_well_metadata(wgroup, [str(t) for t in range(2)], fmt=fmt)
        for tile in range(2):
            img = rng.gamma(2.0, 200.0, size=(3, H, W))
            yy, xx = np.mgrid[0:H, 0:W]
            for _ in range(10):
                cy, cx, r = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(4, 10)
                img += rng.uniform(1000, 15000, size=(3, 1, 1)) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            img = np.clip(img, 0, 65535).astype(np.uint16)
            name = f"{plate}_{well}_{tile}"
            tifffile.imwrite(os.path.join(work, name + ".tif"), img, photometric="minisblack")
            tiles_tiff.append((plate, well, tile, name + ".tif"))
            field = wgroup.require_group(str(tile))
            data = img[ZARR_ORDER]
            omero = {"channels": [{"label": LABELS[k], "color": "FFFFFF",
                                   "window": {"start": 0, "end": 65535, "min": 0, "max": 65535}} for k in ZARR_ORDER]}
            opts = {"chunks": (1, 64, 64), "compressors": [zarr.codecs.ZstdCodec(level=3)]} if v5 else {"chunks": (1, 64, 64)}
            write_image(data, field, fmt=fmt, axes="cyx", scale_factors=[2], storage_options=opts, omero=omero)
            tiles_zarr.append((plate, well, tile, f"{plate}.zarr/{row}/{col}/{tile}"))
            for cid in range(30):
                g = int(rng.integers(0, len(genes)))
                cells.append({"plate": plate, "well": well, "tile": tile, "cell_id": cid,
                              "i": float(rng.uniform(0, H)), "j": float(rng.uniform(0, W)),
                              "sgRNA": f"{genes[g]}_{cid % 2}", "gene": genes[g],
                              "area": float(rng.uniform(50, 500)) if cid % 7 else float("nan"),
                              "phase": ["G1", "S", "M"][cid % 3]})
pd.DataFrame(tiles_tiff, columns=["plate", "well", "tile", "path"]).to_csv(os.path.join(work, "tiles_tiff.csv"), index=False)
pd.DataFrame(tiles_zarr, columns=["plate", "well", "tile", "path"]).to_csv(os.path.join(work, "tiles_zarr.csv"), index=False)
df = pd.DataFrame(cells)
df.to_csv(os.path.join(work, "cells.csv"), index=False)
bf = df.rename(columns={"gene": "gene_symbol_0", "sgRNA": "sgRNA_0", "i": "i_0", "j": "j_0", "cell_id": "label"})
bf["phase"] = bf["phase"].astype("category")
bf["tile"] = bf["tile"].astype("int32")
bf.index = [f"c{k}" for k in range(len(bf))]
bf.to_parquet(os.path.join(work, "cells.parquet"))

w = lambda p: os.path.join(work, p)
run("ingest", "--tiles", w("tiles_tiff.csv"), "--cells", w("cells.csv"), "--out", w("s_tiff"),
    "--crop", CROP, "--channels", ",".join(LABELS), "--force")
run("ingest", "--tiles", w("tiles_zarr.csv"), "--cells", w("cells.parquet"), "--out", w("s_zarr"), "--crop", CROP,
    "--columns", "gene=gene_symbol_0,sgRNA=sgRNA_0,i=i_0,j=j_0,cell_id=label", "--channels", ",".join(LABELS), "--force")
run("store", "export", w("s_tiff"), "--out", w("x_tiff"))
run("store", "export", w("s_zarr"), "--out", w("x_zarr"))
run("store", "export", w("s_zarr"), "--out", w("xp_zarr"), "--format", "parquet")
a, b = np.load(w("x_tiff.npy")), np.load(w("x_zarr.npy"))
if a.shape[0] < 60:
    sys.exit(f"FAIL: only {a.shape[0]} cells written")
same(a, b, "crops of OME-Zarr + Parquet ingest vs TIFF + CSV ingest")
ok(f"ingest: OME-Zarr HCS plates (NGFF 0.4 Blosc + 0.5 zstd, channels by label) + Parquet (--columns) == TIFF + CSV: {a.shape} crops equal")
ta = pd.read_csv(w("x_tiff.tsv"), sep="\t", keep_default_na=False)
tb = pd.read_csv(w("x_zarr.tsv"), sep="\t", keep_default_na=False)
pd.testing.assert_frame_equal(ta, tb)
ok(f"ingest: cell tables equal ({list(ta.columns)})")
tp = pd.read_parquet(w("xp_zarr.parquet"))
same(list(tp.columns), list(ta.columns), "export --format parquet columns")
for c in ta.columns:
    x, y = ta[c].to_numpy(), tp[c].to_numpy()
    if ta[c].dtype.kind == "f":
        same(x.astype(np.float32), y, f"export parquet column {c}")
    else:
        same(x.astype(str), y.astype(str), f"export parquet column {c}")
ok(f"store export --format parquet: pd.read_parquet gives the TSV's table ({dict(tp.dtypes.astype(str))})")
# Against the source table itself: every written cell's centroid and gene, as pandas wrote them.
src = df.set_index(["plate", "well", "tile", "cell_id"])
for r in ta.itertuples():
    s = src.loc[(r.plate, r.well, r.tile, r.cell_id)]
    if s.gene != r.gene or np.float32(s.i) != np.float32(r.i):
        sys.exit(f"FAIL: cell {r.cell} does not match the source table")
ok("store rows match the source table (gene, sgRNA, float32 centroids)")


# 2. Matrices in three formats.
def check_matrix(stem, what):
    x = np.load(stem + ".npy")
    obs = pd.read_csv(stem + ".tsv", sep="\t", keep_default_na=False)
    p = pd.read_parquet(stem + ".parquet")
    meta_cols = list(obs.columns)
    same(list(p.columns[: len(meta_cols)]), meta_cols, f"{what}: parquet metadata columns")
    same(p.iloc[:, len(meta_cols):].to_numpy(np.float32), x, f"{what}: parquet features")
    same(p["cell"].to_numpy(), obs["cell"].to_numpy(), f"{what}: parquet cell column")
    same(p["gene"].astype(str).to_numpy(), obs["gene"].astype(str).to_numpy(), f"{what}: parquet gene column")
    ad = anndata.read_zarr(stem + ".zarr")
    same(np.asarray(ad.X), x, f"{what}: AnnData X")
    same(ad.obs_names.to_numpy(), obs["cell"].astype(str).to_numpy(), f"{what}: AnnData obs_names")
    same(list(ad.obs.columns), meta_cols[1:], f"{what}: AnnData obs columns")
    for c in ["gene", "sgRNA", "plate", "well", "batch"]:
        if str(ad.obs[c].dtype) != "category":
            sys.exit(f"FAIL: {what}: obs[{c}] is {ad.obs[c].dtype}, expected category")
        same(ad.obs[c].astype(str).to_numpy(), obs[c].astype(str).to_numpy(), f"{what}: AnnData obs {c}")
    same(ad.obs["is_ntc"].to_numpy(), obs["is_ntc"].to_numpy(), f"{what}: AnnData obs is_ntc")
    same(ad.obs["tile"].to_numpy(), obs["tile"].to_numpy(), f"{what}: AnnData obs tile")
    same(ad.obs["i"].to_numpy(), obs["i"].to_numpy(np.float32), f"{what}: AnnData obs i")
    if "setdino" not in ad.uns:
        sys.exit(f"FAIL: {what}: no uns['setdino']")
    ok(f"{what}: npy+tsv == pd.read_parquet == anndata.read_zarr ({x.shape}, obs {list(ad.obs.columns)[:4]}…, uns['setdino'])")


for fmt in ["npy", "parquet", "anndata"]:
    run("features", "--store", w("s_zarr"), "--out", w("feat"), "--format", fmt)
check_matrix(w("feat"), "features")

tiny = ["model.patch=8", "model.pos_grid=28", "model.dim=32", "model.heads=2", "model.mlp_hidden=64", "model.depth=2",
        "model.head_hidden=48", "model.head_bottleneck=16", "model.out_dim=32", "data.set_size=4", "data.sets_per_step=2",
        "data.n_local=2", "data.min_cells=8", "train.epochs=1", "train.max_steps=2", "train.backend=cpu"]
sets = [x for s in tiny for x in ("--set", s)]
run("train", "--store", w("s_zarr"), "--out", w("run"), "--quiet", *sets)
ck = sorted(glob.glob(w("run/checkpoints/*.safetensors")))[-1]
for fmt in ["npy", "parquet", "anndata"]:
    run("embed", "--checkpoint", ck, "--store", w("s_zarr"), "--out", w("emb"), "--format", fmt, "--backend", "cpu")
check_matrix(w("emb"), "embed")

# 3. eval's profile dumps.
with open(w("pairs.csv"), "w") as f:
    f.write("entity1,entity2\nG1,G2\n")
for fmt in ["npy", "parquet", "anndata"]:
    run("eval", "--features", w("feat"), "--complexes", w("pairs.csv"), "--out", w(f"eval_{fmt}"), "--quiet",
        "--dump-profiles", "--format", fmt)
for name in ["batch_profiles", "consensus_profiles"]:
    x = np.load(w(f"eval_npy/profiles/{name}.npy"))
    t = pd.read_csv(w(f"eval_npy/profiles/{name}.tsv"), sep="\t", keep_default_na=False)
    p = pd.read_parquet(w(f"eval_parquet/profiles/{name}.parquet"))
    same(p.iloc[:, len(t.columns):].to_numpy(np.float32), x, f"eval dump {name}: parquet")
    pd.testing.assert_frame_equal(p.iloc[:, : len(t.columns)], t, check_dtype=False)
    ad = anndata.read_zarr(w(f"eval_anndata/profiles/{name}.zarr"))
    same(np.asarray(ad.X), x, f"eval dump {name}: AnnData X")
    same(ad.obs_names.to_numpy(), t.iloc[:, 0].astype(str).to_numpy(), f"eval dump {name}: obs_names")
    ok(f"eval --dump-profiles {name}: npy == parquet == AnnData ({x.shape})")
print("ALL OK")
