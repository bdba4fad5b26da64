//! The data-path subcommands parse and run end to end through `cli::run` (store info/verify/export,
//! import-crops, ingest, synth flags), and the flat-field estimator keeps what it should.
use crate::common::*;
use clap::{CommandFactory, Parser};
use setdino::cli::{run, Cli};

fn cli(args: &[&str]) -> anyhow::Result<()> {
    let mut v = vec!["setdino"];
    v.extend_from_slice(args);
    run(Cli::try_parse_from(v)?)
}

#[test]
fn clap_definition_is_valid() {
    Cli::command().debug_assert();
    assert!(Cli::try_parse_from([
        "setdino", "ingest", "--tiles", "t", "--cells", "c", "--out", "o", "--clip", "1,99",
        "--illum", "none"
    ])
    .is_ok());
    assert!(Cli::try_parse_from([
        "setdino", "synth", "--out", "x", "--preset", "small", "--seed", "3"
    ])
    .is_ok());
    assert!(
        Cli::try_parse_from(["setdino", "store", "export", "s"]).is_err(),
        "--out is required"
    );
}

#[test]
fn store_commands_and_import_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = small_store(&d.join("s"), 10);
    let sp = d.join("s").display().to_string();
    cli(&["store", "info", &sp]).unwrap();
    cli(&["store", "info", &sp, "--json"]).unwrap();
    cli(&["store", "info", &sp, "--ntc"]).unwrap();
    cli(&["store", "verify", &sp]).unwrap();
    let stem = d.join("x").display().to_string();
    cli(&["store", "export", &sp, "--out", &stem, "--cells", "3,1"]).unwrap();
    let (shape, v) = read_npy_f32(&d.join("x.npy"));
    assert_eq!(shape, vec![2, 2, 8, 8]);
    assert_eq!(
        v[0],
        s.crop_u16(3).unwrap()[0] as f32 / 65535.0,
        "cells in the order given"
    );
    let e = cli(&["store", "export", &sp, "--out", &stem, "--plates", "nope"]).unwrap_err();
    assert!(format!("{e:#}").contains("plate \"nope\" is not in the store"));
    let out = d.join("t").display().to_string();
    let (npy, tsv) = (
        d.join("x.npy").display().to_string(),
        d.join("x.tsv").display().to_string(),
    );
    cli(&[
        "import-crops",
        "--npy",
        &npy,
        "--meta",
        &tsv,
        "--out",
        &out,
        "--channels",
        "dna,actin",
    ])
    .unwrap();
    let t = setdino::store::Store::open(&d.join("t")).unwrap();
    assert_eq!(t.crop_u16(0).unwrap(), s.crop_u16(3).unwrap());
    assert!(
        cli(&["import-crops", "--npy", &npy, "--meta", &tsv, "--out", &out]).is_err(),
        "no overwrite without --force"
    );
    cli(&[
        "import-crops",
        "--npy",
        &npy,
        "--meta",
        &tsv,
        "--out",
        &out,
        "--force",
    ])
    .unwrap();
    // A damaged store fails `store verify` with the file named.
    let shard = d.join("s/shard-00000.bin");
    let mut b = std::fs::read(&shard).unwrap();
    b[100] ^= 1;
    std::fs::write(&shard, b).unwrap();
    let e = format!("{:#}", cli(&["store", "verify", &sp]).unwrap_err());
    assert!(
        e.contains("shard-00000.bin") && e.contains("failed verification"),
        "{e}"
    );
}

#[test]
fn store_sample_writes_a_step() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = screen_store(&d.join("s"), 16, 2, 2, 3, 20);
    let sp = d.join("s").display().to_string();
    let stem = d.join("step/x").display().to_string();
    cli(&[
        "store",
        "sample",
        &sp,
        "--out",
        &stem,
        "--step",
        "3",
        "--sets",
        "2",
        "--set-size",
        "4",
        "--n-local",
        "4",
    ])
    .unwrap();
    let (gs, g) = read_npy_f32(&d.join("step/x_global.npy"));
    let (ls, _) = read_npy_f32(&d.join("step/x_local.npy"));
    assert_eq!(gs, vec![2, 8, 2, 16, 16]);
    assert_eq!(ls, vec![4, 8, 2, 8, 8]);
    // Same tensors as the library call.
    let cfg = setdino::data::SamplerConfig {
        set_size: 4,
        sets_per_step: 2,
        seed: 0,
        ..Default::default()
    };
    let s = setdino::data::Sampler::new(&store, cfg).unwrap();
    let aug = setdino::data::AugmentConfig {
        n_local: 4,
        ..setdino::data::AugmentConfig::for_crop(16)
    };
    let norm = setdino::data::Normalizer::new(
        setdino::data::NormKind::Ntc {
            compat_2sigma: false,
        },
        &store,
    );
    let t = setdino::data::make_step(&store, &s.sample_step(3), &aug, &norm, 3).unwrap();
    assert_eq!(g, t.global);
    let tsv = std::fs::read_to_string(d.join("step/x_cells.tsv")).unwrap();
    assert_eq!(tsv.lines().count(), 1 + 16);
}

#[test]
fn flat_field_estimator() {
    use setdino::ingest::illum::field_from_mean;
    let (h, w) = (64, 80);
    let f = field_from_mean(&vec![7.0; h * w], h, w).unwrap();
    assert!(
        f.iter().all(|&x| (x - 1.0).abs() < 1e-6),
        "a constant mean gives a flat field"
    );
    // A horizontal ramp: the box filter keeps linear profiles away from the edges, so the interior of the
    // field is the ramp divided by its mean.
    let ramp: Vec<f64> = (0..h * w).map(|q| 100.0 + (q % w) as f64).collect();
    let f = field_from_mean(&ramp, h, w).unwrap();
    let mean = f.iter().map(|&x| x as f64).sum::<f64>() / f.len() as f64;
    assert!((mean - 1.0).abs() < 1e-5);
    let r = 64 / 16;
    for x in 3 * r..w - 3 * r {
        let got = f[30 * w + x] as f64;
        let ratio = got / f[30 * w + 3 * r] as f64;
        let want = (100.0 + x as f64) / (100.0 + 3.0 * r as f64);
        assert!((ratio - want).abs() < 1e-5, "x {x}: {ratio} vs {want}");
    }
    assert!(
        field_from_mean(&vec![0.0; h * w], h, w).is_err(),
        "an all-zero plate cannot be a field"
    );
}
