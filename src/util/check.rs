//! Tensor comparison used by tests, `debug` and `check`: one line per tensor, llm.c style.

/// Maximum absolute difference and the relative error `max|a-b| / max|b|` (b is the reference).
pub fn rel_error(got: &[f64], want: &[f64]) -> (f64, f64) {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let mut max_diff = 0.0f64;
    let mut max_ref = 0.0f64;
    for (a, b) in got.iter().zip(want) {
        max_diff = max_diff.max((a - b).abs());
        max_ref = max_ref.max(b.abs());
    }
    let rel = if max_ref > 0.0 {
        max_diff / max_ref
    } else {
        max_diff
    };
    (max_diff, rel)
}

/// One report line: `name  OK  max|Δ| …  rel …  (…% of tol)`; returns whether it passed.
pub fn report_line(name: &str, got: &[f64], want: &[f64], tol: f64) -> (bool, String) {
    let (d, r) = rel_error(got, want);
    let ok = r <= tol && r.is_finite();
    let line = format!(
        "{:<55} {}  max|Δ| {:.2e}  rel {:.2e}  ({:.0}% of tol)",
        name,
        if ok { "OK  " } else { "FAIL" },
        d,
        r,
        100.0 * r / tol
    );
    (ok, line)
}
