//! Masks and shape measurements on one S×S crop: Otsu threshold, the connected component at the crop
//! centre, hole filling, second-moment ellipse, convex hull (monotone chain) and solidity.
//!
//! Key decision: plain scanline code on `bool` masks in row-major order, with caller-owned buffers so the
//! per-cell path allocates nothing; 8-connected foreground, 4-connected background (consistent topology).

/// Otsu threshold of `img` (skimage `threshold_otsu` semantics: 256 bins over [min, max], the centre of
/// the bin that maximises the between-class variance; foreground is `x > t`). `None` when the image is
/// constant or holds a non-finite value.
pub fn otsu_threshold(img: &[f32]) -> Option<f32> {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &x in img {
        if !x.is_finite() {
            return None;
        }
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if img.is_empty() || hi - lo <= 1e-12 {
        return None;
    }
    const BINS: usize = 256;
    let w = (hi - lo) as f64 / BINS as f64;
    let mut hist = [0u64; BINS];
    for &x in img {
        let b = (((x - lo) as f64 / w) as usize).min(BINS - 1);
        hist[b] += 1;
    }
    let centre = |k: usize| lo as f64 + (k as f64 + 0.5) * w;
    let total: f64 = img.len() as f64;
    let sum_all: f64 = (0..BINS).map(|k| hist[k] as f64 * centre(k)).sum();
    let (mut w0, mut s0) = (0f64, 0f64);
    let (mut best, mut best_k) = (-1f64, 0usize);
    for (k, &h) in hist.iter().enumerate().take(BINS - 1) {
        w0 += h as f64;
        s0 += h as f64 * centre(k);
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let d = s0 / w0 - (sum_all - s0) / w1;
        let v = w0 * w1 * d * d;
        if v > best {
            best = v;
            best_k = k;
        }
    }
    Some(centre(best_k) as f32)
}

/// Keep the 8-connected component of `fg` chosen by `seed`, then fill its holes. fg, out: (S, S).
/// `seed = Some(p)`: the component containing pixel p (if p is foreground); otherwise the component with a
/// pixel nearest the crop's geometric centre ((S−1)/2, (S−1)/2), ties to the first in raster order.
/// `out` is all false when `fg` is. `label`, `stack`: scratch of any length (resized here).
pub fn select_component(
    out: &mut [bool],
    fg: &[bool],
    s: usize,
    seed: Option<usize>,
    label: &mut Vec<u32>,
    stack: &mut Vec<u32>,
) {
    let n = s * s;
    label.clear();
    label.resize(n, 0);
    out[..n].fill(false);
    let c0 = (s as f64 - 1.0) / 2.0;
    let (mut best_label, mut best_d) = (0u32, f64::INFINITY);
    let mut next = 0u32;
    for start in 0..n {
        if !fg[start] || label[start] != 0 {
            continue;
        }
        next += 1;
        label[start] = next;
        stack.clear();
        stack.push(start as u32);
        let mut dmin = f64::INFINITY;
        while let Some(p) = stack.pop() {
            let p = p as usize;
            let (i, j) = (p / s, p % s);
            let d = (i as f64 - c0).powi(2) + (j as f64 - c0).powi(2);
            dmin = dmin.min(d);
            for di in -1i64..=1 {
                for dj in -1i64..=1 {
                    let (ii, jj) = (i as i64 + di, j as i64 + dj);
                    if ii < 0 || jj < 0 || ii >= s as i64 || jj >= s as i64 {
                        continue;
                    }
                    let q = ii as usize * s + jj as usize;
                    if fg[q] && label[q] == 0 {
                        label[q] = next;
                        stack.push(q as u32);
                    }
                }
            }
        }
        if dmin < best_d {
            best_d = dmin;
            best_label = next;
        }
    }
    if let Some(p) = seed.filter(|&p| p < n && fg[p]) {
        best_label = label[p];
    }
    if best_label == 0 {
        return;
    }
    for p in 0..n {
        out[p] = label[p] == best_label;
    }
    fill_holes(out, s, label, stack);
}

/// Set every pixel of `mask` that is not 4-connected to the crop border through non-mask pixels.
/// mask: (S, S), in place.
pub fn fill_holes(mask: &mut [bool], s: usize, seen: &mut Vec<u32>, stack: &mut Vec<u32>) {
    let n = s * s;
    seen.clear();
    seen.resize(n, 0);
    stack.clear();
    for p in 0..n {
        let (i, j) = (p / s, p % s);
        if (i == 0 || j == 0 || i == s - 1 || j == s - 1) && !mask[p] {
            seen[p] = 1;
            stack.push(p as u32);
        }
    }
    while let Some(p) = stack.pop() {
        let p = p as usize;
        let (i, j) = (p / s, p % s);
        let mut visit = |q: usize| {
            if !mask[q] && seen[q] == 0 {
                seen[q] = 1;
                stack.push(q as u32);
            }
        };
        if i > 0 {
            visit(p - s);
        }
        if i + 1 < s {
            visit(p + s);
        }
        if j > 0 {
            visit(p - 1);
        }
        if j + 1 < s {
            visit(p + 1);
        }
    }
    for p in 0..n {
        if !mask[p] && seen[p] == 0 {
            mask[p] = true;
        }
    }
}

/// Shape of a binary region (pixel centres at integer (row, col)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    /// Pixels in the region.
    pub area: f64,
    /// Centroid (row, col); NaN for an empty region.
    pub centroid: (f64, f64),
    /// 4-connected crack length: mask/non-mask pixel edges, the crop border counting as non-mask.
    pub perimeter: f64,
    /// sqrt(1 − λ2/λ1) of the pixel-coordinate covariance (skimage `regionprops` convention).
    pub eccentricity: f64,
    /// 4·sqrt(λ1) and 4·sqrt(λ2) (skimage `regionprops`).
    pub major_axis: f64,
    pub minor_axis: f64,
    /// area / pixels whose centres lie in the convex hull of the region's pixel centres (≤ 1).
    pub solidity: f64,
}

/// Measure `mask` (S, S). An empty mask gives area 0 and NaN for everything else.
pub fn shape(mask: &[bool], s: usize) -> Shape {
    let (mut n, mut si, mut sj) = (0f64, 0f64, 0f64);
    let mut perimeter = 0f64;
    for i in 0..s {
        for j in 0..s {
            let p = i * s + j;
            if !mask[p] {
                continue;
            }
            n += 1.0;
            si += i as f64;
            sj += j as f64;
            let out = |ok: bool, q: usize| !ok || !mask[q];
            perimeter += out(i > 0, p.wrapping_sub(s)) as u32 as f64;
            perimeter += out(i + 1 < s, p + s) as u32 as f64;
            perimeter += out(j > 0, p.wrapping_sub(1)) as u32 as f64;
            perimeter += out(j + 1 < s, p + 1) as u32 as f64;
        }
    }
    if n == 0.0 {
        let nan = f64::NAN;
        return Shape {
            area: 0.0,
            centroid: (nan, nan),
            perimeter: 0.0,
            eccentricity: nan,
            major_axis: nan,
            minor_axis: nan,
            solidity: nan,
        };
    }
    let (ci, cj) = (si / n, sj / n);
    let (mut mii, mut mjj, mut mij) = (0f64, 0f64, 0f64);
    for i in 0..s {
        for j in 0..s {
            if mask[i * s + j] {
                let (di, dj) = (i as f64 - ci, j as f64 - cj);
                mii += di * di;
                mjj += dj * dj;
                mij += di * dj;
            }
        }
    }
    let (a, b, c) = (mii / n, mjj / n, mij / n);
    let tr = (a + b) / 2.0;
    let disc = (((a - b) / 2.0).powi(2) + c * c).sqrt();
    let (l1, l2) = (tr + disc, (tr - disc).max(0.0));
    let eccentricity = if l1 > 0.0 {
        (1.0 - l2 / l1).max(0.0).sqrt()
    } else {
        0.0
    };
    Shape {
        area: n,
        centroid: (ci, cj),
        perimeter,
        eccentricity,
        major_axis: 4.0 * l1.sqrt(),
        minor_axis: 4.0 * l2.sqrt(),
        solidity: n / hull_pixels(mask, s) as f64,
    }
}

/// Cross product of (b − a) and (c − a).
fn cross(a: (i64, i64), b: (i64, i64), c: (i64, i64)) -> i64 {
    (b.0 - a.0) * (c.1 - a.1) - (b.1 - a.1) * (c.0 - a.0)
}

/// Convex hull (Andrew's monotone chain) of points (x, y), counter-clockwise from the smallest (x, y),
/// without collinear points; one point for a single point, two for collinear input, none for none.
pub fn convex_hull(points: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut sorted = points.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let points = &sorted[..];
    if points.len() <= 2 {
        return sorted;
    }
    let mut hull: Vec<(i64, i64)> = Vec::with_capacity(2 * points.len());
    for &p in points {
        while hull.len() >= 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0 {
            hull.pop();
        }
        hull.push(p);
    }
    let lower = hull.len() + 1;
    for &p in points.iter().rev().skip(1) {
        while hull.len() >= lower && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0 {
            hull.pop();
        }
        hull.push(p);
    }
    hull.pop();
    if hull.len() == 2 && hull[0] == hull[1] {
        hull.pop();
    }
    hull
}

/// Number of pixel centres inside or on the convex hull of the mask's pixel centres.
fn hull_pixels(mask: &[bool], s: usize) -> u64 {
    // The hull of a region equals the hull of each row's leftmost and rightmost pixel; (row, col) pairs
    // pushed row by row are already sorted.
    let mut pts: Vec<(i64, i64)> = Vec::with_capacity(2 * s);
    for i in 0..s {
        let row = &mask[i * s..(i + 1) * s];
        if let (Some(a), Some(b)) = (row.iter().position(|&m| m), row.iter().rposition(|&m| m)) {
            pts.push((i as i64, a as i64));
            if b != a {
                pts.push((i as i64, b as i64));
            }
        }
    }
    let hull = convex_hull(&pts);
    if hull.len() == 1 {
        return 1;
    }
    let (i0, i1) = (
        hull.iter().map(|p| p.0).min().unwrap_or(0),
        hull.iter().map(|p| p.0).max().unwrap_or(0),
    );
    let mut count = 0u64;
    for i in i0..=i1 {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for k in 0..hull.len() {
            let (p, q) = (hull[k], hull[(k + 1) % hull.len()]);
            if i < p.0.min(q.0) || i > p.0.max(q.0) {
                continue;
            }
            if p.0 == q.0 {
                lo = lo.min(p.1.min(q.1) as f64);
                hi = hi.max(p.1.max(q.1) as f64);
            } else {
                let x = p.1 as f64 + (i - p.0) as f64 * (q.1 - p.1) as f64 / (q.0 - p.0) as f64;
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
        if lo <= hi {
            let (a, b) = ((lo - 1e-9).ceil() as i64, (hi + 1e-9).floor() as i64);
            count += (b - a + 1).max(0) as u64;
        }
    }
    count
}
