//! Crops → pixels: the false-colour composite, the grey channel rows, the percentile stretch, and the
//! layout of a gallery sheet (title, channel legend, a grid or labelled rows of crops, scale bar).
//!
//! Key decisions (the documented rendering; `tests/gallery.rs` checks it pixel by pixel):
//! - **Contrast**: per channel, the stored u16 values are stretched linearly from the 0.5th to the 99.5th
//!   percentile ([`LOW_PERCENTILE`], [`HIGH_PERCENTILE`]; nearest rank over the exact histogram of every
//!   pixel of the crops the stretch is fitted on) to [0, 1], clamped. `setdino gallery` fits one stretch
//!   over all cells shown in the run (`--contrast shared`, brightness comparable across groups) or one per
//!   group (`--contrast group`).
//! - **Composite**: a channel whose name contains `dna`, `dapi` or `hoechst` (any case) is blue; the
//!   others take green, red, magenta, cyan, yellow, white in order ([`channel_colours`]); the colours add
//!   up: pixel = round(255 · min(1, Σ_c colour_c/255 · level_c)) per component.
//! - **Channels**: one grey tile per channel (grey = round(255 · level)), stacked top to bottom in store
//!   order under each cell, the channel names on the left.
//! - **Size**: crops are enlarged by a whole factor `zoom` (nearest neighbour; by default the smallest
//!   that makes a tile at least [`MIN_TILE`] px) so no pixel is resampled. A grid of n cells has
//!   cols = ⌈√(n·r)⌉ (at most n; r = rows per cell: 1, or C in channels mode) and rows = ⌈n / cols⌉;
//!   the sheet is [`MARGIN`] + label column + cols·tile + (cols − 1)·gap + [`MARGIN`] wide (wider when
//!   the title or footer is longer) and [`HEADER`] + rows·block + (rows − 1)·gap + [`FOOTER`] tall,
//!   where tile = S·zoom, block = r·tile + (r − 1)·[`GAP`] and gap = GAP between cells (3·GAP in
//!   channels mode, so each cell's column of channels reads as one); the label column is empty in
//!   composite mode. Cell p's block starts at column p mod cols, row p div cols.
//! - **Scale bar**: the largest of 1, 2, 5, 10, 20, 50, … crop pixels not above 0.4·S, labelled in crop
//!   pixels ("20 px"), drawn under the grid's first column.
use super::canvas::{blank, fill_rect, lighten, Colour, Text};
use crate::store::Store;
use anyhow::Result;
use image::{Rgb, RgbImage};

/// Sheet background (dark grey, so the black background of a crop shows its edge).
pub const BACKGROUND: Colour = [40, 40, 40];
/// Text and scale bar.
pub const INK: Colour = [235, 235, 235];
/// Secondary text.
pub const DIM: Colour = [170, 170, 170];
/// Border around the sheet's content (pixels).
pub const MARGIN: u32 = 10;
/// Space between tiles (pixels).
pub const GAP: u32 = 2;
/// Height of the header: the title line and the channel legend line.
pub const HEADER: u32 = 56;
/// Height of the footer: the scale bar and the contrast note.
pub const FOOTER: u32 = 36;
/// Title text size (pixels, ascent to descent).
pub const TITLE_PX: f32 = 16.0;
/// Label text size.
pub const LABEL_PX: f32 = 13.0;
/// Detail text size (second line of a row label).
pub const DETAIL_PX: f32 = 11.0;
/// The default zoom makes a tile at least this many pixels wide.
pub const MIN_TILE: usize = 64;
/// Percentiles of the contrast stretch.
pub const LOW_PERCENTILE: f64 = 0.5;
pub const HIGH_PERCENTILE: f64 = 99.5;
/// Colour of the DNA channel in the composite.
pub const DNA_COLOUR: Colour = [0, 0, 255];
/// Colours of the other channels, in store order.
pub const OTHER_COLOURS: [Colour; 6] = [
    [0, 255, 0],
    [255, 0, 0],
    [255, 0, 255],
    [0, 255, 255],
    [255, 255, 0],
    [255, 255, 255],
];

/// How a cell is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One false-colour tile per cell.
    Composite,
    /// One grey tile per channel per cell, stacked.
    Channels,
}

impl std::str::FromStr for Mode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Mode> {
        match s {
            "composite" => Ok(Mode::Composite),
            "channels" => Ok(Mode::Channels),
            _ => anyhow::bail!("unknown --mode `{s}`; HINT: composite or channels"),
        }
    }
}

/// The name of a composite colour (for captions): blue, green, red, magenta, cyan, yellow, white.
pub fn colour_name(c: Colour) -> &'static str {
    match c {
        [0, 0, 255] => "blue",
        [0, 255, 0] => "green",
        [255, 0, 0] => "red",
        [255, 0, 255] => "magenta",
        [0, 255, 255] => "cyan",
        [255, 255, 0] => "yellow",
        _ => "white",
    }
}

/// `dna blue, actin red, …`: the composite's channels and colours, for captions.
pub fn colour_legend(style: &Style) -> String {
    let parts: Vec<String> = style
        .channels
        .iter()
        .zip(&style.colours)
        .map(|(n, &c)| format!("{n} {}", colour_name(c)))
        .collect();
    parts.join(", ")
}

/// Whether a channel name is a DNA stain.
pub fn is_dna(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    ["dna", "dapi", "hoechst"].iter().any(|k| l.contains(k))
}

/// The composite colour of each channel (see the module docs): the first DNA channel blue, the others
/// [`OTHER_COLOURS`] in order (cycling after six).
pub fn channel_colours(names: &[String]) -> Vec<Colour> {
    let dna = names.iter().position(|n| is_dna(n));
    let mut next = 0usize;
    names
        .iter()
        .enumerate()
        .map(|(k, _)| {
            if Some(k) == dna {
                DNA_COLOUR
            } else {
                let c = OTHER_COLOURS[next % OTHER_COLOURS.len()];
                next += 1;
                c
            }
        })
        .collect()
}

/// Per-channel contrast limits: value ≤ lo → 0, value ≥ hi → 1, linear between.
#[derive(Clone, Debug, PartialEq)]
pub struct Stretch {
    pub lo: Vec<u16>,
    pub hi: Vec<u16>,
}

/// The value at nearest rank round(p/100 · (total − 1)) of a histogram over u16 values.
pub fn percentile(hist: &[u64], total: u64, p: f64) -> u16 {
    if total == 0 {
        return 0;
    }
    let rank = (p / 100.0 * (total - 1) as f64)
        .round()
        .clamp(0.0, (total - 1) as f64) as u64;
    let mut seen = 0u64;
    for (v, &n) in hist.iter().enumerate() {
        seen += n;
        if seen > rank {
            return u16::try_from(v).unwrap_or(u16::MAX);
        }
    }
    u16::MAX
}

impl Stretch {
    /// Fits the percentile stretch on `crops` ((C, S, S) each): exact per-channel histograms.
    pub fn fit(crops: &[&[u16]], c: usize) -> Stretch {
        let mut hist = vec![vec![0u64; 1 << 16]; c];
        for crop in crops {
            let plane = crop.len() / c.max(1);
            for (ch, h) in hist.iter_mut().enumerate() {
                for &v in &crop[ch * plane..(ch + 1) * plane] {
                    h[usize::from(v)] += 1;
                }
            }
        }
        let (mut lo, mut hi) = (Vec::with_capacity(c), Vec::with_capacity(c));
        for h in &hist {
            let total: u64 = h.iter().sum();
            let l = percentile(h, total, LOW_PERCENTILE);
            let u = percentile(h, total, HIGH_PERCENTILE);
            lo.push(l);
            // A flat channel: everything at lo is black, anything above it full.
            hi.push(if u > l { u } else { l.saturating_add(1) });
        }
        Stretch { lo, hi }
    }

    /// The display level of value `v` of channel `ch`, in [0, 1].
    pub fn level(&self, ch: usize, v: u16) -> f32 {
        let (lo, hi) = (f32::from(self.lo[ch]), f32::from(self.hi[ch]));
        ((f32::from(v) - lo) / (hi - lo).max(1.0)).clamp(0.0, 1.0)
    }
}

/// The composite colour of pixel `q` (row-major index within a plane) of `crop` ((C, S, S)).
pub fn composite_pixel(
    crop: &[u16],
    q: usize,
    plane: usize,
    st: &Stretch,
    colours: &[Colour],
) -> Colour {
    let mut acc = [0f32; 3];
    for (ch, col) in colours.iter().enumerate() {
        let l = st.level(ch, crop[ch * plane + q]);
        for (a, &c) in acc.iter_mut().zip(col) {
            *a += f32::from(c) / 255.0 * l;
        }
    }
    acc.map(|a| (255.0 * a.min(1.0)).round().clamp(0.0, 255.0) as u8)
}

/// The grey level of a single-channel pixel.
pub fn grey_pixel(v: u16, ch: usize, st: &Stretch) -> Colour {
    let g = (255.0 * st.level(ch, v)).round().clamp(0.0, 255.0) as u8;
    [g, g, g]
}

/// The smallest zoom that makes a tile of an `s`-pixel crop at least [`MIN_TILE`] pixels.
pub fn auto_zoom(s: usize) -> u32 {
    let z = MIN_TILE.div_ceil(s.max(1)).max(1);
    u32::try_from(z).unwrap_or(1)
}

/// Scale bar length in crop pixels: the largest 1·10^k, 2·10^k or 5·10^k not above 0.4·s (at least 1).
pub fn scale_bar_px(s: usize) -> usize {
    let limit = (s * 2) / 5;
    let mut best = 1usize;
    let mut base = 1usize;
    while base <= limit {
        for m in [1, 2, 5] {
            if base * m <= limit {
                best = base * m;
            }
        }
        base *= 10;
    }
    best
}

/// What every sheet of one run shares: the store's geometry and channels, colours, mode, zoom, font.
pub struct Style {
    pub channels: Vec<String>,
    pub colours: Vec<Colour>,
    pub mode: Mode,
    /// Crop side S and channels C.
    pub s: usize,
    pub c: usize,
    pub zoom: u32,
    pub text: Text,
}

impl Style {
    pub fn new(store: &Store, mode: Mode, zoom: Option<u32>) -> Result<Style> {
        let channels = store.manifest().channels.clone();
        Ok(Style {
            colours: channel_colours(&channels),
            channels,
            mode,
            s: store.crop(),
            c: store.channels(),
            zoom: zoom.unwrap_or_else(|| auto_zoom(store.crop())),
            text: Text::new()?,
        })
    }
    /// Tile side in sheet pixels.
    pub fn tile(&self) -> u32 {
        u32::try_from(self.s)
            .unwrap_or(u32::MAX)
            .saturating_mul(self.zoom)
    }
    /// Tiles stacked per cell: C in channels mode, else 1.
    pub fn tiles_per_cell(&self) -> u32 {
        match self.mode {
            Mode::Composite => 1,
            Mode::Channels => u32::try_from(self.c).unwrap_or(1),
        }
    }
    /// Height of one cell's block of tiles.
    pub fn block(&self) -> u32 {
        let r = self.tiles_per_cell();
        r * self.tile() + (r - 1) * GAP
    }
    /// Width of the channel-name column on the left of a channels-mode grid (0 in composite mode).
    pub fn label_column(&self) -> u32 {
        match self.mode {
            Mode::Composite => 0,
            Mode::Channels => {
                let w = self
                    .channels
                    .iter()
                    .map(|n| self.text.width(LABEL_PX, n))
                    .max();
                w.unwrap_or(0) + 3 * GAP
            }
        }
    }
}

/// Where the tiles of a grid go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GridLayout {
    pub cols: u32,
    pub rows: u32,
    /// Top-left corner of the first cell's block.
    pub x0: u32,
    pub y0: u32,
    /// Tile side, block height, gap between cells' blocks (both directions).
    pub tile: u32,
    pub block: u32,
    pub gap: u32,
    pub width: u32,
    pub height: u32,
}

/// ⌈√x⌉ for the column count.
fn ceil_sqrt(x: u64) -> u64 {
    let mut r = 0u64;
    while r * r < x {
        r += 1;
    }
    r
}

impl GridLayout {
    /// The layout of `n` cells (module docs), at least `min_width` wide; `cols` overrides the count.
    pub fn new(style: &Style, n: usize, cols: Option<u32>, min_width: u32) -> GridLayout {
        let n64 = u64::try_from(n.max(1)).unwrap_or(u64::MAX);
        let auto = ceil_sqrt(n64.saturating_mul(u64::from(style.tiles_per_cell()))).min(n64);
        let cols = cols.map_or(auto, u64::from).clamp(1, n64);
        let rows = n64.div_ceil(cols);
        let (cols, rows) = (
            u32::try_from(cols).unwrap_or(1),
            u32::try_from(rows).unwrap_or(1),
        );
        let tile = style.tile();
        let block = style.block();
        let gap = match style.mode {
            Mode::Composite => GAP,
            Mode::Channels => 3 * GAP,
        };
        let x0 = MARGIN + style.label_column();
        let grid_w = cols * tile + (cols - 1) * gap;
        let grid_h = rows * block + (rows - 1) * gap;
        GridLayout {
            cols,
            rows,
            x0,
            y0: HEADER,
            tile,
            block,
            gap,
            width: (x0 + grid_w + MARGIN).max(min_width),
            height: HEADER + grid_h + FOOTER,
        }
    }
    /// Top-left corner of the block of the cell at grid position `p`.
    pub fn origin(&self, p: u32) -> (u32, u32) {
        let (col, row) = (p % self.cols, p / self.cols);
        (
            self.x0 + col * (self.tile + self.gap),
            self.y0 + row * (self.block + self.gap),
        )
    }
    /// The bottom edge of the grid (where the footer starts).
    pub fn bottom(&self) -> u32 {
        self.height - FOOTER
    }
}

/// Paints `crop` ((C, S, S)) enlarged by `zoom` with its top-left corner at (x, y).
pub fn paint_cell(img: &mut RgbImage, x: u32, y: u32, crop: &[u16], style: &Style, st: &Stretch) {
    let plane = style.s * style.s;
    let tile = style.tile();
    match style.mode {
        Mode::Composite => paint_tile(img, x, y, style, |q| {
            composite_pixel(crop, q, plane, st, &style.colours)
        }),
        Mode::Channels => {
            for ch in 0..style.c {
                let dy = u32::try_from(ch).unwrap_or(0) * (tile + GAP);
                paint_tile(img, x, y + dy, style, |q| {
                    grey_pixel(crop[ch * plane + q], ch, st)
                });
            }
        }
    }
}

/// Paints one S×S tile, enlarged by whole pixels, from a colour per crop pixel.
fn paint_tile(img: &mut RgbImage, x: u32, y: u32, style: &Style, colour: impl Fn(usize) -> Colour) {
    let z = style.zoom;
    for i in 0..style.s {
        for j in 0..style.s {
            let c = colour(i * style.s + j);
            let (ii, jj) = (u32::try_from(i).unwrap_or(0), u32::try_from(j).unwrap_or(0));
            for dy in 0..z {
                for dx in 0..z {
                    let (px, py) = (x + jj * z + dx, y + ii * z + dy);
                    if px < img.width() && py < img.height() {
                        img.put_pixel(px, py, Rgb(c));
                    }
                }
            }
        }
    }
}

/// The legend line under the title: the composite's channel colours, or the channels mode's rule.
fn legend_parts(style: &Style) -> Vec<(String, Colour)> {
    match style.mode {
        Mode::Composite => {
            let mut v = vec![("composite:".to_string(), DIM)];
            for (n, &c) in style.channels.iter().zip(&style.colours) {
                v.push((n.clone(), lighten(c, 0.3)));
            }
            v
        }
        Mode::Channels => vec![(
            format!("one grey row per channel: {}", style.channels.join(", ")),
            DIM,
        )],
    }
}

fn legend_width(style: &Style) -> u32 {
    let space = style.text.width(LABEL_PX, " ");
    legend_parts(style)
        .iter()
        .map(|(s, _)| style.text.width(LABEL_PX, s) + 2 * space)
        .sum()
}

/// The footer's scale bar label.
fn bar_label(style: &Style) -> String {
    format!("{} px", scale_bar_px(style.s))
}

/// The narrowest sheet that fits the title, the legend and the footer.
pub fn text_width(style: &Style, title: &str, note: &str) -> u32 {
    let t = style.text.width(TITLE_PX, title);
    let bar = u32::try_from(scale_bar_px(style.s)).unwrap_or(1) * style.zoom;
    let foot = bar
        + 8
        + style.text.width(LABEL_PX, &bar_label(style))
        + 16
        + style.text.width(LABEL_PX, note);
    t.max(legend_width(style)).max(foot) + 2 * MARGIN
}

/// Draws the title and the legend line.
pub fn draw_header(img: &mut RgbImage, style: &Style, title: &str) {
    let m = MARGIN as f32;
    style.text.draw(img, m, m, TITLE_PX, title, INK);
    let mut x = m;
    let space = style.text.width(LABEL_PX, " ") as f32;
    for (s, c) in legend_parts(style) {
        x += style.text.draw(img, x, m + 24.0, LABEL_PX, &s, c) as f32 + 2.0 * space;
    }
}

/// Draws the scale bar at (x, y_top of the footer) and the contrast note after its label.
pub fn draw_footer(img: &mut RgbImage, style: &Style, x: u32, y: u32, note: &str) {
    let bar = u32::try_from(scale_bar_px(style.s)).unwrap_or(1) * style.zoom;
    fill_rect(img, x, y + 10, bar, 4, INK);
    let tx = (x + bar + 8) as f32;
    let w = style
        .text
        .draw(img, tx, (y + 4) as f32, LABEL_PX, &bar_label(style), INK);
    style.text.draw(
        img,
        tx + w as f32 + 16.0,
        (y + 4) as f32,
        LABEL_PX,
        note,
        DIM,
    );
}

/// Channel names on the left of each tile row of a channels-mode grid.
fn draw_channel_labels(img: &mut RgbImage, style: &Style, g: &GridLayout) {
    for row in 0..g.rows {
        let (_, y) = g.origin(row * g.cols);
        for (ch, name) in style.channels.iter().enumerate() {
            let dy = u32::try_from(ch).unwrap_or(0) * (g.tile + GAP) + g.tile / 2;
            let ty = (y + dy) as f32 - LABEL_PX / 2.0 - 1.0;
            style.text.draw(img, MARGIN as f32, ty, LABEL_PX, name, DIM);
        }
    }
}

/// A grid sheet of `cells` (grid position = index in `cells`) under `title`.
pub fn grid(
    store: &Store,
    cells: &[u32],
    title: &str,
    note: &str,
    style: &Style,
    st: &Stretch,
    cols: Option<u32>,
) -> Result<RgbImage> {
    let g = GridLayout::new(style, cells.len(), cols, text_width(style, title, note));
    let mut img = blank(g.width, g.height, BACKGROUND);
    draw_header(&mut img, style, title);
    if style.mode == Mode::Channels {
        draw_channel_labels(&mut img, style, &g);
    }
    for (p, &k) in cells.iter().enumerate() {
        let (x, y) = g.origin(u32::try_from(p).unwrap_or(u32::MAX));
        paint_cell(&mut img, x, y, store.crop_u16(k as usize)?, style, st);
    }
    if cells.is_empty() {
        style.text.draw(
            &mut img,
            g.x0 as f32,
            g.y0 as f32,
            LABEL_PX,
            "no cells",
            DIM,
        );
    }
    draw_footer(&mut img, style, g.x0, g.bottom(), note);
    Ok(img)
}

/// One labelled row of a rows sheet: a name, a detail line and the cells drawn beside them.
#[derive(Clone, Debug)]
pub struct Row {
    pub label: String,
    pub detail: String,
    pub cells: Vec<u32>,
}

/// A sheet with one labelled row of composite tiles per [`Row`] (at most `per_row` tiles each).
pub fn rows(
    store: &Store,
    rows: &[Row],
    per_row: usize,
    title: &str,
    note: &str,
    style: &Style,
    st: &Stretch,
) -> Result<RgbImage> {
    let tile = style.tile();
    let label_w = rows
        .iter()
        .map(|r| {
            style
                .text
                .width(LABEL_PX, &r.label)
                .max(style.text.width(DETAIL_PX, &r.detail))
        })
        .max()
        .unwrap_or(0)
        + 4 * GAP;
    let per = u32::try_from(per_row.max(1)).unwrap_or(1);
    let nrows = u32::try_from(rows.len().max(1)).unwrap_or(1);
    let x0 = MARGIN + label_w;
    let width = (x0 + per * tile + (per - 1) * GAP + MARGIN).max(text_width(style, title, note));
    let block = style.block();
    let height = HEADER + nrows * block + (nrows - 1) * 2 * GAP + FOOTER;
    let mut img = blank(width, height, BACKGROUND);
    draw_header(&mut img, style, title);
    for (r, row) in rows.iter().enumerate() {
        let y = HEADER + u32::try_from(r).unwrap_or(0) * (block + 2 * GAP);
        let ty = (y + block / 2) as f32 - LABEL_PX;
        style
            .text
            .draw(&mut img, MARGIN as f32, ty, LABEL_PX, &row.label, INK);
        style.text.draw(
            &mut img,
            MARGIN as f32,
            ty + 16.0,
            DETAIL_PX,
            &row.detail,
            DIM,
        );
        for (p, &k) in row.cells.iter().take(per_row).enumerate() {
            let x = x0 + u32::try_from(p).unwrap_or(0) * (tile + GAP);
            paint_cell(&mut img, x, y, store.crop_u16(k as usize)?, style, st);
        }
        if row.cells.is_empty() {
            style
                .text
                .draw(&mut img, x0 as f32, ty, LABEL_PX, "no cells", DIM);
        }
    }
    draw_footer(&mut img, style, x0, height - FOOTER, note);
    Ok(img)
}

/// Fits a [`Stretch`] on the crops of `cells`.
pub fn fit_stretch(store: &Store, cells: &[u32]) -> Result<Stretch> {
    let crops: Vec<&[u16]> = cells
        .iter()
        .map(|&k| store.crop_u16(k as usize))
        .collect::<Result<_>>()?;
    Ok(Stretch::fit(&crops, store.channels()))
}

/// The footer's contrast note for a stretch fitted over `scope`.
pub fn contrast_note(scope: &str) -> String {
    format!("contrast: percentiles {LOW_PERCENTILE}–{HIGH_PERCENTILE}, {scope}")
}
