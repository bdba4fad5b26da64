"""Independent check of `setdino ingest --illum none`: numpy writes a screen with tifffile, setdino ingests
and exports it, numpy recomputes every crop from the rules (numpy.percentile per plate and channel over all
pixels of the plate's tiles, clip, rescale, crop rows floor(i)-c/2 .. floor(i)+c/2-1) and compares.

Run (needs numpy and tifffile): python tests/reference/ingest_check.py path/to/setdino [workdir]
Exit status 0 when every exported crop matches within the u16 quantisation (0.5/65535 + float slack).
"""
import csv
import os
import subprocess
import sys
import tempfile

import numpy as np
import tifffile

exe = sys.argv[1]
work = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp()
os.makedirs(work, exist_ok=True)
rng = np.random.default_rng(7)
H, W, C, CROP = 300, 260, 3, 64
plates = {"plateA": ["A1", "A2"], "plateB": ["B1"]}
tiles, cells = [], []
images = {}
for plate, wells in plates.items():
    for well in wells:
        for tile in range(3):
            img = rng.gamma(2.0, 300.0, size=(C, H, W)).astype(np.float64)
            yy, xx = np.mgrid[0:H, 0:W]
            for _ in range(12):  # bright blobs
                cy, cx, r = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(5, 15)
                img += rng.uniform(2000, 20000, size=(C, 1, 1)) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            img = np.clip(img, 0, 65535).astype(np.uint16)
            name = f"{plate}_{well}_{tile}.tif"
            tifffile.imwrite(os.path.join(work, name), img, photometric="minisblack")
            images[(plate, well, tile)] = img
            tiles.append((plate, well, tile, name))
            for cid in range(40):
                i, j = rng.uniform(-5, H + 5), rng.uniform(-5, W + 5)
                gene = rng.choice(["nontargeting", "G1", "G2"])
                cells.append((plate, well, tile, cid, round(i, 3), round(j, 3), f"{gene}_1", gene))
with open(os.path.join(work, "tiles.csv"), "w") as f:
    f.write("plate,well,tile,path\n")
    f.writelines(f"{p},{w},{t},{n}\n" for p, w, t, n in tiles)
with open(os.path.join(work, "cells.csv"), "w") as f:
    f.write("plate,well,tile,cell_id,i,j,sgRNA,gene\n")
    f.writelines(",".join(map(str, c)) + "\n" for c in cells)
store, stem = os.path.join(work, "store"), os.path.join(work, "export")
subprocess.run([exe, "ingest", "--tiles", os.path.join(work, "tiles.csv"), "--cells", os.path.join(work, "cells.csv"),
                "--out", store, "--crop", str(CROP), "--illum", "none", "--channels", "a,b,c", "--force"], check=True)
subprocess.run([exe, "store", "export", store, "--out", stem], check=True)
got = np.load(stem + ".npy")
meta = list(csv.DictReader(open(stem + ".tsv"), delimiter="\t"))
bounds = {}
for plate in plates:
    stack = np.stack([img for (p, _, _), img in images.items() if p == plate])
    bounds[plate] = [(np.percentile(stack[:, c], 0.1), np.percentile(stack[:, c], 99.9)) for c in range(C)]
expected_n, worst = 0, 0.0
by_key = {(r["plate"], r["well"], int(r["tile"]), int(r["cell_id"])): k for k, r in enumerate(meta)}
for plate, well, tile, cid, i, j, _, _ in cells:
    r0, c0 = int(np.floor(i)) - CROP // 2, int(np.floor(j)) - CROP // 2
    if r0 < 0 or c0 < 0 or r0 + CROP > H or c0 + CROP > W:
        assert (plate, well, tile, cid) not in by_key, "a cell whose box leaves the tile was exported"
        continue
    expected_n += 1
    img = images[(plate, well, tile)][:, r0:r0 + CROP, c0:c0 + CROP].astype(np.float64)
    lo = np.array([b[0] for b in bounds[plate]])[:, None, None]
    hi = np.array([b[1] for b in bounds[plate]])[:, None, None]
    want = np.clip((img - lo) / (hi - lo), 0, 1)
    worst = max(worst, float(np.abs(got[by_key[(plate, well, tile, cid)]] - want).max()))
assert expected_n == len(meta), (expected_n, len(meta))
print(f"{expected_n} crops compared, max |setdino - numpy| = {worst:.3g} (u16 quantisation: {0.5 / 65535:.3g})")
sys.exit(0 if worst <= 0.5 / 65535 + 1e-6 else 1)
