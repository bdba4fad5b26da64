//! OME-Zarr (NGFF) images as ingest tiles: a `tiles.csv` row's `path` may name the multiscale group of
//! an image (a directory), read at level 0 (the full resolution), one plane per channel.
//!
//! Key decision: the NGFF metadata is read as JSON by us (the `multiscales` and `omero` attributes, from
//! `.zattrs` in NGFF 0.1–0.4 on Zarr V2, or from `zarr.json`'s `attributes.ome` in NGFF 0.5 on Zarr V3),
//! and the pixels by `zarrs` (Zarr V2 and V3, uncompressed, Blosc, zstd and gzip chunks). Axes follow the
//! metadata (`t`, `c`, `z`, `y`, `x` in any NGFF order; NGFF 0.1/0.2 images without axes are `tczyx`);
//! `t` and `z` must have one plane (a stack is an error, not a silent first plane). Channels are chosen
//! by name (the `omero` labels) when `--channels` is given and the image has labels, else in order. 8- and
//! 16-bit unsigned samples stay integers, as TIFF's do; other numeric types become f32.
use crate::ingest::tiff::{Page, Pixels};
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zarrs::array::{data_type, Array, ArraySubset};
use zarrs::filesystem::FilesystemStore;

/// The metadata of one OME-Zarr image (no pixels read yet).
#[derive(Clone, Debug)]
pub struct Image {
    pub path: PathBuf,
    /// Level-0 array path inside the group (`datasets[0].path`).
    pub level0: String,
    /// Axis names of level 0, in array order.
    pub axes: Vec<String>,
    pub shape: Vec<u64>,
    /// `omero.channels[*].label`, when every channel has one.
    pub labels: Option<Vec<String>>,
}

/// True if `path` looks like an OME-Zarr image: a directory with Zarr group metadata.
pub fn is_ome_zarr(path: &Path) -> bool {
    path.is_dir() && (path.join(".zattrs").is_file() || path.join("zarr.json").is_file())
}

/// The NGFF attributes of the group at `path` (V2 `.zattrs`, or V3 `zarr.json` → `attributes.ome`, or
/// `attributes` itself for writers that put NGFF keys at the top level).
fn ngff_attributes(path: &Path) -> Result<Value> {
    let read = |p: PathBuf| -> Result<Value> {
        let text = std::fs::read(&p).with_context(|| format!("{}: cannot read", p.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("{}: not valid JSON", p.display()))
    };
    let v2 = path.join(".zattrs");
    if v2.is_file() {
        return read(v2);
    }
    let v3 = path.join("zarr.json");
    if v3.is_file() {
        let meta = read(v3)?;
        let attrs = meta.get("attributes").cloned().unwrap_or(Value::Null);
        return Ok(attrs.get("ome").cloned().unwrap_or(attrs));
    }
    bail!(
        "{}: no .zattrs or zarr.json; HINT: `path` must name the OME-Zarr image group (the directory whose \
         metadata has `multiscales`), e.g. plate.zarr/A/1/0",
        path.display()
    )
}

/// Axis names from NGFF `axes` (objects with `name`, or plain strings in 0.3), or `tczyx` cut to `ndim`.
fn axis_names(ms: &Value, ndim: usize, path: &Path) -> Result<Vec<String>> {
    let names: Vec<String> = match ms.get("axes").and_then(Value::as_array) {
        Some(axes) => axes
            .iter()
            .map(|a| {
                a.get("name")
                    .and_then(Value::as_str)
                    .or_else(|| a.as_str())
                    .map(str::to_lowercase)
                    .with_context(|| {
                        format!("{}: multiscales axes entry {a} has no name", path.display())
                    })
            })
            .collect::<Result<_>>()?,
        None => "tczyx"[5usize.saturating_sub(ndim)..]
            .chars()
            .map(String::from)
            .collect(),
    };
    ensure!(
        names.len() == ndim,
        "{}: {} axes in the metadata for a {ndim}-D level-0 array",
        path.display(),
        names.len()
    );
    for need in ["y", "x"] {
        ensure!(
            names.iter().any(|n| n == need),
            "{}: no `{need}` axis (axes {names:?}); HINT: an image needs y and x axes",
            path.display()
        );
    }
    for n in &names {
        ensure!(
            ["t", "c", "z", "y", "x"].contains(&n.as_str()),
            "{}: axis {n:?} is not one of t, c, z, y, x",
            path.display()
        );
    }
    Ok(names)
}

fn open_store(path: &Path) -> Result<Arc<FilesystemStore>> {
    Ok(Arc::new(FilesystemStore::new(path).with_context(|| {
        format!("{}: cannot open as Zarr", path.display())
    })?))
}

impl Image {
    /// Read the image's metadata (multiscales, level-0 shape, channel labels).
    pub fn open(path: &Path) -> Result<Image> {
        let attrs = ngff_attributes(path)?;
        let ms = attrs
            .get("multiscales")
            .and_then(Value::as_array)
            .and_then(|v| v.first())
            .with_context(|| {
                format!(
                    "{}: no `multiscales` in the group's attributes; HINT: `path` must name an OME-Zarr image \
                     (for a plate: plate.zarr/ROW/COL/FIELD)",
                    path.display()
                )
            })?;
        let level0 = ms
            .get("datasets")
            .and_then(Value::as_array)
            .and_then(|d| d.first())
            .and_then(|d| d.get("path"))
            .and_then(Value::as_str)
            .with_context(|| format!("{}: multiscales has no datasets[0].path", path.display()))?
            .to_string();
        let store = open_store(path)?;
        let array = Array::open(store, &format!("/{level0}"))
            .with_context(|| format!("{}: cannot open level-0 array {level0:?}", path.display()))?;
        let shape = array.shape().to_vec();
        let axes = axis_names(ms, shape.len(), path)?;
        let labels = attrs
            .get("omero")
            .and_then(|o| o.get("channels"))
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .map(|c| c.get("label").and_then(Value::as_str).map(String::from))
                    .collect::<Option<Vec<String>>>()
            });
        let img = Image {
            path: path.into(),
            level0,
            axes,
            shape,
            labels,
        };
        for a in ["t", "z"] {
            let n = img.size(a);
            ensure!(
                n == 1,
                "{}: axis {a} has {n} planes; HINT: ingest reads 2-D tiles, so project the stack (or write one \
                 image per plane) first",
                path.display()
            );
        }
        if let Some(l) = &img.labels {
            ensure!(
                u64::try_from(l.len()).ok() == Some(img.size("c")),
                "{}: omero lists {} channels, the image has {}",
                path.display(),
                l.len(),
                img.size("c")
            );
        }
        Ok(img)
    }

    /// Size of axis `a` (1 when the image has no such axis).
    pub fn size(&self, a: &str) -> u64 {
        self.axes
            .iter()
            .position(|x| x == a)
            .map_or(1, |k| self.shape[k])
    }

    /// The channel count.
    pub fn channels(&self) -> usize {
        usize::try_from(self.size("c")).unwrap_or(usize::MAX)
    }

    /// Channel names: the omero labels, else `ch0…`.
    pub fn channel_names(&self) -> Vec<String> {
        self.labels
            .clone()
            .unwrap_or_else(|| (0..self.channels()).map(|k| format!("ch{k}")).collect())
    }

    /// The image's channel index for each of `names` (the store's channels, in store order): by label
    /// when the image has labels, else by position (then `names` must have one entry per channel).
    pub fn channel_indices(&self, names: &[String]) -> Result<Vec<u64>> {
        match &self.labels {
            Some(labels) => names
                .iter()
                .map(|n| {
                    labels
                        .iter()
                        .position(|l| l == n)
                        .and_then(|k| u64::try_from(k).ok())
                        .with_context(|| {
                            format!(
                                "{}: no channel labelled {n:?} (its channels: {labels:?}); HINT: --channels names \
                                 OME-Zarr channels by their omero label",
                                self.path.display()
                            )
                        })
                })
                .collect(),
            None => {
                ensure!(
                    names.len() == self.channels(),
                    "{}: {} channels, expected {} ({}); HINT: the image has no omero channel labels, so its \
                     channels are taken in order",
                    self.path.display(),
                    self.channels(),
                    names.len(),
                    names.join(",")
                );
                Ok((0..self.size("c")).collect())
            }
        }
    }

    /// Read the planes of the channels `names` (see [`Image::channel_indices`]) at level 0.
    pub fn read(&self, names: &[String]) -> Result<Vec<Page>> {
        let idx = self.channel_indices(names)?;
        let store = open_store(&self.path)?;
        let array = Array::open(store, &format!("/{}", self.level0))
            .with_context(|| format!("{}: cannot open level-0 array", self.path.display()))?;
        let (h, w) = (self.size("y"), self.size("x"));
        let hw = usize::try_from(h.saturating_mul(w))
            .with_context(|| format!("{}: {h}×{w} px is too large", self.path.display()))?;
        let dt = array.data_type().clone();
        idx.iter()
            .map(|&c| {
                let ranges: Vec<std::ops::Range<u64>> = self
                    .axes
                    .iter()
                    .zip(&self.shape)
                    .map(|(a, &n)| match a.as_str() {
                        "c" => c..c + 1,
                        _ => 0..n,
                    })
                    .collect();
                let sub = ArraySubset::new_with_ranges(&ranges);
                let data = read_plane(&array, &dt, &sub).with_context(|| {
                    format!("{}: reading channel {c} of level 0", self.path.display())
                })?;
                ensure!(
                    data.len() == hw,
                    "{}: plane of {} px, expected {hw}",
                    self.path.display(),
                    data.len()
                );
                Ok(Page {
                    h: usize::try_from(h)?,
                    w: usize::try_from(w)?,
                    data,
                })
            })
            .collect()
    }
}

/// One plane's samples: u8/u16 as integers, other numeric types as f32.
fn read_plane(
    array: &Array<FilesystemStore>,
    dt: &zarrs::array::DataType,
    sub: &ArraySubset,
) -> Result<Pixels> {
    macro_rules! as_f32 {
        ($t:ty) => {
            Pixels::F32(
                array
                    .retrieve_array_subset::<Vec<$t>>(sub)?
                    .into_iter()
                    .map(|x| x as f32)
                    .collect(),
            )
        };
    }
    Ok(if *dt == data_type::uint16() {
        Pixels::U16(array.retrieve_array_subset::<Vec<u16>>(sub)?)
    } else if *dt == data_type::uint8() {
        Pixels::U16(
            array
                .retrieve_array_subset::<Vec<u8>>(sub)?
                .into_iter()
                .map(u16::from)
                .collect(),
        )
    } else if *dt == data_type::float32() {
        Pixels::F32(array.retrieve_array_subset::<Vec<f32>>(sub)?)
    } else if *dt == data_type::float64() {
        as_f32!(f64)
    } else if *dt == data_type::int16() {
        as_f32!(i16)
    } else if *dt == data_type::int32() {
        as_f32!(i32)
    } else if *dt == data_type::uint32() {
        as_f32!(u32)
    } else if *dt == data_type::int8() {
        as_f32!(i8)
    } else {
        bail!("data type {dt} is not supported; HINT: use (u)int8/16/32 or float32/64 samples")
    })
}
