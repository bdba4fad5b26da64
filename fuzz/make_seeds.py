#!/usr/bin/env python3
"""Writes the hand-made seed inputs of every fuzz target into fuzz/corpus/<target>/ (standard library only).

The TIFF seeds are tests/fixtures/*.tif; multi-file targets join their files with SEP (setdino::fuzzing::SEP).
Run from the repository root: python3 fuzz/make_seeds.py
"""
import json, os, shutil, struct, zlib, glob

SEP = b"\n--8<--\n"
ROOT = "fuzz/corpus"


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# tiff: the fixtures (BigTIFF u8, ImageJ f32, planar u16, tiled deflate u16) and a minimal 2x2 u16 strip.
for p in glob.glob("tests/fixtures/*.tif"):
    with open(p, "rb") as f:
        put("tiff", os.path.basename(p), f.read())


def tiny_tiff(w, h, pixels, bits=16, spp=1):
    data = b"".join(struct.pack("<H" if bits == 16 else "<B", v) for v in pixels)
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 1, bits), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 4, 1, 0), (277, 3, 1, spp), (278, 3, 1, h), (279, 4, 1, len(data))]
    ifd_off = 8
    data_off = ifd_off + 2 + 12 * len(tags) + 4
    out = b"II*\x00" + struct.pack("<I", ifd_off) + struct.pack("<H", len(tags))
    for tag, typ, cnt, val in tags:
        if tag == 273:
            val = data_off
        out += struct.pack("<HHI", tag, typ, cnt) + (struct.pack("<HH", val, 0) if typ == 3 else struct.pack("<I", val))
    return out + struct.pack("<I", 0) + data


put("tiff", "tiny_u16.tif", tiny_tiff(2, 2, [0, 1, 65535, 7]))
put("tiff", "tiny_u8.tif", tiny_tiff(3, 1, [1, 2, 3], bits=8))

# tables: tiles.csv SEP cells.csv (the fuzz function provides a.tif and b.tif, and tiles P/W/0..3).
put("tables", "multipage.csv", b"plate,well,tile,path\nP,W,0,a.tif\nP,W,1,b.tif\n" + SEP +
    b"plate,well,tile,cell_id,i,j,sgRNA,gene,area\nP,W,0,1,10.5,3,sg1,G1,12\nP,W,1,2,4,5.25,sg2,nontargeting,9\n")
put("tables", "perchannel.csv", b"plate\twell\ttile\tpath_a\tpath_b\nP\tW\t0\ta.tif\tb.tif\n" + SEP +
    b"plate\twell\ttile\tcell_id\ti\tj\tsgRNA\tgene\nP\tW\t0\t7\t1e1\t-2\tsgX\tX\n")
put("tables", "bad_cell.csv", b"plate,well,tile,path\nP,W,3,a.tif\n" + SEP +
    b"plate,well,tile,cell_id,i,j,sgRNA,gene\nP,W,3,1,nan,3,s,g\n")

# complexes: the three formats.
put("complexes", "corum.txt", b"ComplexID\tComplexName\tOrganism\tsubunits(Gene name)\n1\tBAF\tHuman\tSMARCA4;ARID1A;None\n2\tX\tHuman\tA;B;A\n")
put("complexes", "clusters.tsv", b"c1\tA B C\nc2\tD E\n")
put("complexes", "pairs.csv", b"entity1,entity2\nA,B\nB,A\nC,D\n")


def npy(descr, shape, payload, version=1):
    sh = "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
    d = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, sh)
    pre = 10 if version == 1 else 12
    total = pre + len(d) + 1
    d += " " * (-total % 64) + "\n"
    head = b"\x93NUMPY" + bytes([version, 0]) + (struct.pack("<H", len(d)) if version == 1 else struct.pack("<I", len(d)))
    return head + d.encode() + payload


put("npy", "f4_2x1x2x2.npy", npy("<f4", (2, 1, 2, 2), struct.pack("<8f", *range(8))))
put("npy", "u2_3.npy", npy("<u2", (3,), struct.pack("<3H", 1, 2, 3), version=2))
put("npy", "scalar.npy", npy("<f4", (), struct.pack("<f", 1.5), version=3))


def safetensors(tensors, metadata=None):
    header, data = {}, b""
    for name, shape, values in tensors:
        b = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


put("checkpoint", "two_tensors.safetensors", safetensors(
    [("dino_loss.center", [1, 2], [0.5, -0.5]), ("x", [3], [1, 2, 3])],
    {"format": "setdino.checkpoint/1", "adam_step": "3", "train": json.dumps({"step": 1, "epoch": 0, "seed": 2})}))
# Enough shapes for infer_config: dim 4, 2 channels, patch 2, grid 2, depth 1, head 4 -> 3 -> 2, K 5.
put("checkpoint", "infer.safetensors", safetensors([
    ("student.backbone.patch_embed.proj.weight", [4, 2, 2, 2], [0.0] * 32),
    ("student.backbone.pos_embed", [1, 5, 4], [0.0] * 20),
    ("student.backbone.blocks.0.norm1.weight", [4], [1.0] * 4),
    ("student.backbone.blocks.0.mlp.fc1.weight", [8, 4], [0.0] * 32),
    ("student.head.mlp.0.weight", [3, 4], [0.0] * 12),
    ("student.head.mlp.2.weight", [2, 3], [0.0] * 6),
    ("student.head.last_layer.weight_v", [5, 2], [0.0] * 10),
]))


# store: store.json SEP index.bin SEP shard-00000.bin SEP ntc_stats.json SEP meta.tsv
def header(magic, dims, count):
    return magic + struct.pack("<II3IQ", 1, 64, *dims, count) + b"\0" * 24


crops = [struct.pack("<4H", 0, 100, 65535, 7), struct.pack("<4H", 1, 2, 3, 4)]
shard = header(b"SDCROPS\0", (1, 2, 2), 2) + b"".join(crops)
recs = b"".join(struct.pack("<8IQffII", 0, k, 0, k, k, 0, k, k, 10 + k, 1.0, 2.0, k, zlib.crc32(crops[k]))
                for k in range(2))
index = header(b"SDINDEX\0", (56, 0, 0), 2) + recs
ntc = json.dumps([{"batch": 1, "plate": "P", "well": "W1", "ntc_cells": 1,
                   "channels": [{"mean": 0.1, "std": 0.0, "median": 0.1, "mad": 0.0}]}]).encode()
meta = b"x\nfoo\nbar\n"
entry = lambda f, b, n=0: {"file": f, "bytes": len(b), "crc32": zlib.crc32(b), "count": n}
manifest = {"format": "setdino-crop-store", "version": 1, "crop": 2, "channels": ["dna"], "dtype": "u16-unorm",
            "cells": 2, "ntc_gene": "nontargeting", "shards": [entry("shard-00000.bin", shard, 2)],
            "index": entry("index.bin", index, 2),
            "files": [entry("ntc_stats.json", ntc), entry("meta.tsv", meta)],
            "plates": ["P"], "wells": ["W0", "W1"], "batches": [{"plate": 0, "well": 0}, {"plate": 0, "well": 1}],
            "genes": ["g", "nontargeting"], "sgrnas": ["s0", "s1"], "meta_columns": ["x"], "created_by": "seed"}
put("store", "two_cells", json.dumps(manifest).encode() + SEP + index + SEP + shard + SEP + ntc + SEP + meta)

# config: config.toml SEP overrides
put("config", "tiny.toml", b'preset = "tiny"\n[data]\nset_size = 4\nmin_cells = 10\n[train]\nepochs = 2\nval_wells = ["W1"]\n'
    + SEP + b"model.dim=48\noptim.lr=1e-3\ndata.strategy=within-batch\n")
put("config", "vits16.toml", b'preset = "vits16"\n[optim]\nteacher_init = "separate_head"\n')


# Regression inputs: crashes fixed in the library (fuzz/README.md lists them). Replayed by tests/fuzz_corpus.rs.
def reg(target, name, data):
    d = os.path.join("fuzz/regressions", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def raw_npy(dict_text):
    d = dict_text.encode()
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d)) + d


# store/npy.rs parse_header: `s[1..close]` sliced before the '(' was checked (panic), a multi-byte first
# character (panic), and the element count overflowed (panic in debug; wrapped to 0 in release, so a
# header with no data was accepted as a 2^64-element array).
reg("npy", "shape_close_paren", raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': ), }"))
reg("npy", "shape_multibyte", raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': \u00e9), }"))
reg("npy", "shape_overflow", raw_npy("{'descr': '<u2', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }"))


def long_dims_tiff(w, h, nbytes=8):
    tags = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 16), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, h), (279, 4, 1, nbytes)]
    data_off = 8 + 2 + 12 * len(tags) + 4
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags))
    for tag, typ, cnt, val in tags:
        val = data_off if tag == 273 else val
        out += struct.pack("<HHI", tag, typ, cnt) + (struct.pack("<HH", val, 0) if typ == 3 else struct.pack("<I", val))
    return out + struct.pack("<I", 0) + b"\x01" * nbytes


# ingest/tiff.rs read_pages: `Limits::unlimited()` let a 130-byte file declare 1e6 x 1e6 u16 pixels, and the
# decoder allocated the 2 TB buffer up front (abort: memory allocation failed).
reg("tiff", "huge_dims", long_dims_tiff(1000000, 1000000))
reg("tiff", "big_dims", long_dims_tiff(30000, 30000))

# store/reader.rs read_manifest: listed files were joined to the store directory unchecked, so
# "/dev/zero" made `verify` read forever (hang); a crop size overflowing usize panicked; a batch naming a
# missing plate made Manifest::batch_name panic.
def store_input(edit):
    m = json.loads(json.dumps(manifest))
    edit(m)
    return json.dumps(m).encode() + SEP + index + SEP + shard + SEP + ntc + SEP + meta


reg("store", "file_dev_zero", store_input(lambda m: m["files"][0].update(file="/dev/zero")))
reg("store", "file_parent", store_input(lambda m: m["files"][1].update(file="../meta.tsv")))
reg("store", "crop_overflow", store_input(lambda m: m.update(crop=4294967295, channels=["a", "b", "c"])))
reg("store", "batch_plate_missing", store_input(lambda m: m["batches"][1].update(plate=7)))

# model/checkpoint.rs infer_config: pos_embed with 0 tokens underflowed `pos[1] - 1` (panic), and a scalar
# fc1 / head weight was indexed `[0]` (panic).
base = [
    ("student.backbone.patch_embed.proj.weight", [4, 2, 2, 2], [0.0] * 32),
    ("student.backbone.blocks.0.norm1.weight", [4], [1.0] * 4),
    ("student.head.mlp.0.weight", [3, 4], [0.0] * 12),
    ("student.head.mlp.2.weight", [2, 3], [0.0] * 6),
    ("student.head.last_layer.weight_v", [5, 2], [0.0] * 10),
]
reg("checkpoint", "pos_embed_no_tokens", safetensors(base + [
    ("student.backbone.pos_embed", [1, 0, 4], []),
    ("student.backbone.blocks.0.mlp.fc1.weight", [8, 4], [0.0] * 32)]))
reg("checkpoint", "fc1_scalar", safetensors(base + [
    ("student.backbone.pos_embed", [1, 5, 4], [0.0] * 20),
    ("student.backbone.blocks.0.mlp.fc1.weight", [], [0.0])]))
