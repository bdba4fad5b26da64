//! Data-parallel collectives: what a training step needs from its peers, over any `Backend`.
//!
//! A data-parallel step splits the step's S sets over W ranks (S/W each); every rank runs the forward and
//! backward on its sets, then the ranks average their gradients (one all-reduce of the flat gradient
//! buffer) and gather the teacher's rows (so the center, Sinkhorn targets, entropy and collapse checks see
//! the whole global batch, exactly as one process would). Clipping, AdamW and the EMA then run on identical
//! inputs on every rank, so the replicas stay identical without broadcasting parameters.
//!
//! Three communicators:
//! - [`Solo`]: one rank; every collective is the identity (the single-process path).
//! - [`local_group`]: W ranks as threads of one process, each with its own backend (the CPU and the SIMT
//!   emulator); collectives exchange host copies. This is how the data-parallel logic is tested without
//!   GPUs, and how `train.data_parallel = W` runs on the CPU.
//! - NCCL (`backend::gpu::nccl`): one process per GPU, started by torchrun or Slurm ([`Launch`]).
//!
//! Key decision: every rank computes the same sum in the same rank order (the in-process group sums in
//! f64, rank 0 first), so all replicas receive identical bits and never drift apart.
pub mod launch;
pub mod rendezvous;

pub use launch::Launch;

use crate::backend::Backend;
use anyhow::{bail, ensure, Result};
use std::sync::{Arc, Condvar, Mutex};

/// The collectives of data-parallel training, on buffers of backend `B`.
pub trait Communicator<B: Backend> {
    /// This process's (or thread's) rank, 0-based.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn world(&self) -> usize;
    /// `buf ← (1/W) Σ_ranks buf`, the same values on every rank.
    fn all_reduce_mean(&self, be: &B, buf: &mut B::Buf) -> Result<()>;
    /// `recv ← concat(send of rank 0, …, send of rank W−1)`; every `send` has the same length and `recv`
    /// W times it.
    fn all_gather(&self, be: &B, send: &B::Buf, recv: &mut B::Buf) -> Result<()>;
    /// Host scalars averaged over the ranks (losses, stop flags), through `all_reduce_mean`.
    fn mean_of(&self, be: &B, values: &[f64]) -> Result<Vec<f64>> {
        if self.world() == 1 {
            return Ok(values.to_vec());
        }
        let host: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        let mut buf = be.upload(&host)?;
        self.all_reduce_mean(be, &mut buf)?;
        be.download_f64(&buf)
    }
    /// Whether any rank says `flag` (e.g. "stop after this step"), so every rank decides alike.
    fn any(&self, be: &B, flag: bool) -> Result<bool> {
        Ok(self.mean_of(be, &[if flag { 1.0 } else { 0.0 }])?[0] > 0.0)
    }
}

/// One rank: the collectives are identities.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl<B: Backend> Communicator<B> for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce_mean(&self, _be: &B, _buf: &mut B::Buf) -> Result<()> {
        Ok(())
    }
    fn all_gather(&self, be: &B, send: &B::Buf, recv: &mut B::Buf) -> Result<()> {
        let n = be.buf_len(send);
        ensure!(
            be.buf_len(recv) == n,
            "all_gather: recv holds {} values, 1 rank × {n} expected",
            be.buf_len(recv)
        );
        be.copy(recv, 0, send, 0, n)
    }
}

/// The state one exchange round shares between the threads of a [`local_group`].
struct Round {
    /// Contributions of the current round, by rank.
    slots: Vec<Option<Vec<f64>>>,
    arrived: usize,
    /// Every rank's contribution, once all have arrived; read by each rank once.
    result: Option<Arc<Vec<Vec<f64>>>>,
    taken: usize,
    /// Set when a rank left the group (its thread ended or failed): waiting ranks give up instead of
    /// waiting for it forever.
    left: Option<usize>,
}

struct Shared {
    world: usize,
    round: Mutex<Round>,
    cv: Condvar,
}

/// A rank of an in-process group (see [`local_group`]).
pub struct LocalComm {
    rank: usize,
    shared: Arc<Shared>,
}

/// W ranks that live as threads of one process; hand one to each thread.
pub fn local_group(world: usize) -> Result<Vec<LocalComm>> {
    ensure!(world >= 1, "a group needs at least one rank");
    let shared = Arc::new(Shared {
        world,
        round: Mutex::new(Round {
            slots: vec![None; world],
            arrived: 0,
            result: None,
            taken: 0,
            left: None,
        }),
        cv: Condvar::new(),
    });
    Ok((0..world)
        .map(|rank| LocalComm {
            rank,
            shared: shared.clone(),
        })
        .collect())
}

impl LocalComm {
    /// This thread's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Every rank contributes `mine`; every rank receives all contributions in rank order.
    fn exchange(&self, mine: Vec<f64>) -> Result<Arc<Vec<Vec<f64>>>> {
        let sh = &*self.shared;
        let lock_err =
            || anyhow::anyhow!("the in-process group's lock is poisoned (a rank panicked)");
        let mut st = sh.round.lock().map_err(|_| lock_err())?;
        // The previous round is still being read by slower ranks: wait for it to finish.
        while st.result.is_some() {
            st = sh.cv.wait(st).map_err(|_| lock_err())?;
        }
        st.slots[self.rank] = Some(mine);
        st.arrived += 1;
        if st.arrived == sh.world {
            let all: Vec<Vec<f64>> = st.slots.iter_mut().filter_map(Option::take).collect();
            st.result = Some(Arc::new(all));
            st.arrived = 0;
            st.taken = 0;
            sh.cv.notify_all();
        } else {
            while st.result.is_none() {
                if let Some(r) = st.left {
                    bail!(
                        "rank {} waits for rank {r}, which left the data-parallel group (it failed or finished early)",
                        self.rank
                    );
                }
                st = sh.cv.wait(st).map_err(|_| lock_err())?;
            }
        }
        let Some(all) = st.result.clone() else {
            bail!("in-process exchange: no result after every rank arrived");
        };
        st.taken += 1;
        if st.taken == sh.world {
            st.result = None;
            sh.cv.notify_all();
        }
        Ok(all)
    }

    fn contribution<B: Backend>(be: &B, buf: &B::Buf) -> Result<Vec<f64>> {
        be.download_f64(buf)
    }

    /// Writes `values` into `buf` (same length) on the backend.
    fn store<B: Backend>(be: &B, buf: &mut B::Buf, values: &[f64]) -> Result<()> {
        let host: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        let up = be.upload(&host)?;
        be.copy(buf, 0, &up, 0, host.len())
    }
}

impl Drop for LocalComm {
    fn drop(&mut self) {
        if let Ok(mut st) = self.shared.round.lock() {
            st.left.get_or_insert(self.rank);
            self.shared.cv.notify_all();
        }
    }
}

impl<B: Backend> Communicator<B> for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.shared.world
    }
    fn all_reduce_mean(&self, be: &B, buf: &mut B::Buf) -> Result<()> {
        let n = be.buf_len(buf);
        let all = self.exchange(Self::contribution(be, buf)?)?;
        ensure!(
            all.iter().all(|v| v.len() == n),
            "all_reduce: the ranks' buffers differ in length ({:?})",
            all.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let inv = 1.0 / all.len() as f64;
        let mean: Vec<f64> = (0..n)
            .map(|i| all.iter().map(|v| v[i]).sum::<f64>() * inv)
            .collect();
        Self::store(be, buf, &mean)
    }
    fn all_gather(&self, be: &B, send: &B::Buf, recv: &mut B::Buf) -> Result<()> {
        let n = be.buf_len(send);
        let all = self.exchange(Self::contribution(be, send)?)?;
        ensure!(
            all.iter().all(|v| v.len() == n) && be.buf_len(recv) == n * all.len(),
            "all_gather: {} ranks × {n} values do not fill {} (or the ranks' lengths differ)",
            all.len(),
            be.buf_len(recv)
        );
        let cat: Vec<f64> = all.iter().flatten().copied().collect();
        Self::store(be, recv, &cat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;

    fn on_threads<T: Send>(world: usize, f: impl Fn(LocalComm) -> T + Sync) -> Vec<T> {
        let comms = local_group(world).unwrap();
        std::thread::scope(|s| {
            let hs: Vec<_> = comms
                .into_iter()
                .map(|c| {
                    let f = &f;
                    s.spawn(move || f(c))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn mean_and_gather_agree_on_every_rank_over_many_rounds() {
        let out = on_threads(3, |c| {
            let be = CpuBackend::<f32>::new();
            let mut last = Vec::new();
            for round in 0..50 {
                let x = [c.rank as f32 + round as f32, 2.0 * c.rank as f32];
                let mut buf = be.upload(&x).unwrap();
                Communicator::<CpuBackend<f32>>::all_reduce_mean(&c, &be, &mut buf).unwrap();
                let mut g = be.zeros(6).unwrap();
                Communicator::<CpuBackend<f32>>::all_gather(
                    &c,
                    &be,
                    &be.upload(&x).unwrap(),
                    &mut g,
                )
                .unwrap();
                last = vec![be.download(&buf).unwrap(), be.download(&g).unwrap()];
                assert_eq!(last[0], vec![1.0 + round as f32, 2.0]);
                let r = round as f32;
                assert_eq!(last[1], vec![r, 0.0, 1.0 + r, 2.0, 2.0 + r, 4.0]);
            }
            last
        });
        assert!(out.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn a_rank_that_leaves_releases_the_others_with_an_error() {
        let out = on_threads(2, |c| {
            let be = CpuBackend::<f32>::new();
            if c.rank == 1 {
                return Ok(());
            }
            let mut buf = be.upload(&[1.0]).unwrap();
            Communicator::<CpuBackend<f32>>::all_reduce_mean(&c, &be, &mut buf)
        });
        let err = format!("{:#}", out[0].as_ref().unwrap_err());
        assert!(err.contains("rank 1, which left"), "{err}");
    }
}
