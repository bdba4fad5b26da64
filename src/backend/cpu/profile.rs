//! Where the CPU step's time goes (`setdino bench --profile`): when started, every `Backend` method of
//! `CpuBackend` adds its wall time to a table under its name, and the GEMMs also under their shape with
//! their FLOPs. Off by default: a disabled span is one relaxed atomic load. The ops run one after
//! another on the calling thread (each parallel inside), so the spans add up to the step.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<BTreeMap<String, Entry>> = Mutex::new(BTreeMap::new());

/// Accumulated time of one op (or one GEMM shape).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Entry {
    pub calls: u64,
    pub secs: f64,
    /// FLOPs (GEMMs only; 0 for the other ops).
    pub flops: f64,
}

/// Clears the table and starts recording.
pub fn start() {
    if let Ok(mut t) = TABLE.lock() {
        t.clear();
    }
    ON.store(true, Ordering::Relaxed);
}

/// Stops recording and returns the table: op names, and `gemm <op> R×I×O` rows for the GEMMs.
pub fn stop() -> Vec<(String, Entry)> {
    ON.store(false, Ordering::Relaxed);
    TABLE
        .lock()
        .map(|mut t| std::mem::take(&mut *t).into_iter().collect())
        .unwrap_or_default()
}

/// Records its lifetime under `name` (and the GEMM shape) when dropped.
pub struct Span {
    name: &'static str,
    shape: Option<(String, f64)>,
    t0: Instant,
}

/// A span for a non-GEMM op; `None` (nothing recorded) unless started.
pub fn span(name: &'static str) -> Option<Span> {
    ON.load(Ordering::Relaxed).then(|| Span {
        name,
        shape: None,
        t0: Instant::now(),
    })
}

/// A span for a GEMM of `passes` products of (R, I)·(I, O) (forward 1; backward 1 or 2).
pub fn gemm(name: &'static str, r: usize, i: usize, o: usize, passes: usize) -> Option<Span> {
    ON.load(Ordering::Relaxed).then(|| Span {
        name,
        shape: Some((
            format!("gemm {name} {r}×{i}×{o}"),
            2.0 * (passes * r * i * o) as f64,
        )),
        t0: Instant::now(),
    })
}

impl Drop for Span {
    fn drop(&mut self) {
        let dt = self.t0.elapsed().as_secs_f64();
        if let Ok(mut t) = TABLE.lock() {
            let flops = self.shape.as_ref().map_or(0.0, |s| s.1);
            let e = t.entry(self.name.to_string()).or_default();
            e.calls += 1;
            e.secs += dt;
            e.flops += flops;
            if let Some((key, f)) = self.shape.take() {
                let e = t.entry(key).or_default();
                e.calls += 1;
                e.secs += dt;
                e.flops += f;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::cpu::CpuBackend;
    use crate::backend::Backend;

    /// A profiled GEMM shows up under its op and its shape with its FLOPs; nothing is recorded after
    /// `stop`. (An odd shape, so other tests running in parallel cannot add to its row.)
    #[test]
    fn spans_record_ops_and_gemm_shapes() {
        let be = CpuBackend::<f32>::new();
        let (r, i, o) = (3usize, 5usize, 7usize);
        let x = be.upload(&vec![1.0; r * i]).unwrap();
        let p = be.upload(&vec![0.5; o * i + o]).unwrap();
        let mut y = be.zeros(r * o).unwrap();
        super::start();
        be.matmul_forward(&mut y, &x, &p, 0, Some(o * i), r, i, o)
            .unwrap();
        let table = super::stop();
        let row = table
            .iter()
            .find(|(k, _)| k == "gemm matmul_forward 3×5×7")
            .map(|(_, e)| *e)
            .expect("the GEMM shape row");
        assert_eq!(row.calls, 1);
        assert_eq!(row.flops, 2.0 * (r * i * o) as f64);
        assert!(row.secs > 0.0);
        assert!(table
            .iter()
            .any(|(k, e)| k == "matmul_forward" && e.calls >= 1));
        be.matmul_forward(&mut y, &x, &p, 0, Some(o * i), r, i, o)
            .unwrap();
        assert!(
            !super::stop().iter().any(|(k, _)| k.ends_with(" 3×5×7")),
            "nothing recorded while stopped"
        );
    }
}
