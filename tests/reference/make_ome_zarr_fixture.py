"""Writes tests/fixtures/ome_zarr/: small OME-Zarr images made by independent writers (ome-zarr-py on
zarr-python), which `tests/formats.rs` reads back with setdino's reader and compares pixel for pixel.

Each image IMG.zarr comes with IMG.npy, the level-0 pixels as numpy wrote them (uint16, C x Y x X), and
the list of what the images cover is in index.json:
  * v04_blosc.zarr  NGFF 0.4 (Zarr V2), axes c,y,x, uint16, Blosc(lz4) chunks 2 x 16 x 16, omero labels
  * v05_zstd.zarr   NGFF 0.5 (Zarr V3), axes c,z,y,x (z = 1), uint16, zstd, omero labels
  * v04_gzip.zarr   NGFF 0.4 (Zarr V2), axes t,c,z,y,x, uint8 (read back as integers), gzip, no labels
  * v04_raw.zarr    NGFF 0.4 (Zarr V2), axes c,y,x, float32, uncompressed, omero labels
  * v05_sharded.zarr NGFF 0.5 (Zarr V3), axes c,y,x, uint16, sharded (32 x 32 shards of 16 x 16 zstd chunks)
and cells.parquet / cells.csv, one cell table written by pandas (pyarrow) both ways (see the end).

Made with ome-zarr 0.18.0, zarr 3.1.6, numcodecs 0.16.6, numpy 2.4.6, Python 3.11.7:
  python tests/reference/make_ome_zarr_fixture.py [OUTDIR]   (default tests/fixtures/ome_zarr)
"""
import json
import os
import shutil
import sys

import numpy as np
import zarr
from numcodecs import GZip, Blosc
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.writer import write_image

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "fixtures", "ome_zarr")
if os.path.exists(out):
    shutil.rmtree(out)
os.makedirs(out)
rng = np.random.default_rng(11)
H, W = 40, 36  # not a multiple of the 16-px chunks: edge chunks are partial
labels = ["DAPI", "tubulin", "actin"]
omero = {"channels": [{"label": l, "color": c, "window": {"start": 0, "end": 65535, "min": 0, "max": 65535}}
                      for l, c in zip(labels, ["0000FF", "00FF00", "FF0000"])]}


def pixels(dtype, c=3):
    if dtype == np.uint8:
        return rng.integers(0, 256, size=(c, H, W)).astype(np.uint8)
    if dtype == np.float32:
        return rng.gamma(2.0, 100.0, size=(c, H, W)).astype(np.float32)
    img = rng.gamma(2.0, 300.0, size=(c, H, W))
    img[:, 5:12, 7:20] += 20000.0  # a bright block
    return np.clip(img, 0, 65535).astype(np.uint16)


def write(name, data, fmt, axes, options, with_labels, zarr_format):
    path = os.path.join(out, name + ".zarr")
    root = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    meta = {"omero": omero} if with_labels else {}
    write_image(data, root, fmt=fmt, axes=axes, scale_factors=[2], storage_options=options, **meta)
    flat = data.reshape((-1,) + data.shape[-2:])  # C x Y x X (t and z are 1)
    np.save(os.path.join(out, name + ".npy"), flat)
    return {"name": name, "axes": axes, "dtype": str(data.dtype), "labels": labels if with_labels else None,
            "channels": int(flat.shape[0]), "height": H, "width": W}


index = []
index.append(write("v04_blosc", pixels(np.uint16), FormatV04(), "cyx",
                   {"chunks": (2, 16, 16), "compressor": Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)},
                   True, 2))
index.append(write("v05_zstd", pixels(np.uint16)[:, None], FormatV05(), "czyx",
                   {"chunks": (1, 1, 16, 16), "compressors": [zarr.codecs.ZstdCodec(level=3)]}, True, 3))
index.append(write("v04_gzip", pixels(np.uint8, 2)[None, :, None], FormatV04(), "tczyx",
                   {"chunks": (1, 1, 1, 16, 16), "compressor": GZip(level=6)}, False, 2))
index.append(write("v04_raw", pixels(np.float32), FormatV04(), "cyx",
                   {"chunks": (3, 20, 20), "compressor": None}, True, 2))
index.append(write("v05_sharded", pixels(np.uint16), FormatV05(), "cyx",
                   {"chunks": (1, 16, 16), "shards": (1, 32, 32)}, True, 3))
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump(index, f, indent=1)

# A cell table for the two labelled uint16 images as tiles (P1/A1/0 = v04_blosc, P1/A2/0 = v05_zstd), in
# Brieflow-like column names, written by pandas twice: cells.parquet (pyarrow; a non-default index, so
# the file has an `__index_level_0__` column) and cells.csv (to_csv, no index). Ingest must give the same
# store from either, and from OME-Zarr tiles as from TIFF tiles of the same pixels.
import pandas as pd

rows = []
for well in ["A1", "A2"]:
    for k in range(14):
        rows.append({"plate": "P1", "well": well, "tile": 0, "label": 100 + k,
                     "i_0": float(rng.uniform(6, H - 6)), "j_0": float(rng.uniform(6, W - 6)),
                     "sgRNA_0": f"sg{k % 3}", "gene_symbol_0": ["nontargeting", "G1", "G2"][k % 3],
                     "area": float(rng.uniform(50, 400)) if k % 5 else float("nan"), "phase": ["G1", "S", "M"][k % 3]})
df = pd.DataFrame(rows)
df["tile"] = df["tile"].astype("int32")
df["phase"] = df["phase"].astype("category")
df.to_csv(os.path.join(out, "cells.csv"), index=False)
df.index = [f"cell{k}" for k in range(len(df))]
df.to_parquet(os.path.join(out, "cells.parquet"))
print("wrote", out)
