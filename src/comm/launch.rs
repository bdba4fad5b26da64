//! Who am I in a multi-process job: read once, from the variables the launchers users already run set.
//!
//! - torchrun (and `torch.distributed.launch`, Lightning, …): `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//!   `MASTER_ADDR`, `MASTER_PORT`.
//! - Slurm (`srun`, one task per GPU): `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`; `MASTER_ADDR` and
//!   `MASTER_PORT` are exported by the batch script (see the README's recipe).
//!
//! torchrun's variables win when both are present (torchrun inside an allocation).
//!
//! The NCCL id is served by rank 0 on `MASTER_ADDR` at port `MASTER_PORT + 1`, or `$SETDINO_RDZV_PORT`
//! when set: torchrun's own agent already listens on `MASTER_PORT` (its TCPStore).
use anyhow::{bail, Context, Result};

/// Overrides the port rank 0 serves the NCCL id on (default `MASTER_PORT + 1`).
pub const RDZV_PORT: &str = "SETDINO_RDZV_PORT";

/// A process's place in a data-parallel job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world: usize,
    /// The GPU this process drives (its ordinal on its node).
    pub local_rank: usize,
    /// Where rank 0 serves the NCCL id: `MASTER_ADDR` and `MASTER_PORT + 1` (or `$SETDINO_RDZV_PORT`),
    /// when set.
    pub master: Option<(String, u16)>,
    /// Which launcher's variables these came from (for messages).
    pub source: &'static str,
}

impl Launch {
    /// The process's place from the environment; `None` when no launcher started it, or a job of one.
    pub fn from_env() -> Result<Option<Launch>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Launch::from_env`] over any variable lookup (tests pass a map).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let num = |k: &str| -> Result<Option<usize>> {
            match var(k) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .map(Some)
                    .with_context(|| format!("${k} = '{v}' is not a non-negative integer")),
            }
        };
        let (names, source) = if var("WORLD_SIZE").is_some() {
            (["RANK", "WORLD_SIZE", "LOCAL_RANK"], "torchrun")
        } else if var("SLURM_NTASKS").is_some() && var("SLURM_PROCID").is_some() {
            (["SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"], "Slurm")
        } else {
            return Ok(None);
        };
        let [rank_k, world_k, local_k] = names;
        let world = num(world_k)?.unwrap_or(1);
        if world <= 1 {
            return Ok(None);
        }
        let Some(rank) = num(rank_k)? else {
            bail!("${world_k} = {world} but ${rank_k} is not set ({source} sets both)");
        };
        if rank >= world {
            bail!("${rank_k} = {rank} is not below ${world_k} = {world}");
        }
        let local_rank = num(local_k)?.unwrap_or(0);
        let master = match (var("MASTER_ADDR"), var("MASTER_PORT")) {
            (Some(a), Some(p)) => {
                let port = |k: &str, v: &str| {
                    v.trim()
                        .parse::<u16>()
                        .with_context(|| format!("${k} = '{v}' is not a port number"))
                };
                let master = port("MASTER_PORT", &p)?;
                let rdzv = match var(RDZV_PORT) {
                    Some(v) => port(RDZV_PORT, &v)?,
                    None => master.checked_add(1).with_context(|| {
                        format!("$MASTER_PORT = {master}: the NCCL id is served on the next port; HINT: set ${RDZV_PORT}")
                    })?,
                };
                Some((a.trim().to_string(), rdzv))
            }
            (None, None) => None,
            (Some(_), None) => bail!("$MASTER_ADDR is set but $MASTER_PORT is not"),
            (None, Some(_)) => bail!("$MASTER_PORT is set but $MASTER_ADDR is not"),
        };
        Ok(Some(Launch {
            rank,
            world,
            local_rank,
            master,
            source,
        }))
    }
}

impl Launch {
    /// The GPU ordinal this rank drives among the `visible` ones: `LOCAL_RANK` when the process sees the
    /// node's GPUs; 0 when it sees exactly one (Slurm's `--gpus-per-task=1` or `--gpu-bind` hide the
    /// others, so every task's GPU is its device 0).
    pub fn device(&self, visible: usize) -> Result<usize> {
        match visible {
            0 => bail!("rank {}: no CUDA device is visible", self.rank),
            1 => Ok(0),
            n if self.local_rank < n => Ok(self.local_rank),
            n => bail!(
                "rank {}: local rank {} but only {n} GPUs are visible; HINT: one task per GPU (--ntasks-per-node = GPUs per node)",
                self.rank,
                self.local_rank
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn torchrun_and_slurm_variables_are_read_and_torchrun_wins() {
        let t = launch(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node7"),
            ("MASTER_PORT", "29500"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (t.rank, t.world, t.local_rank, t.source),
            (3, 4, 1, "torchrun")
        );
        // torchrun's agent owns MASTER_PORT; the id is served on the next one unless told otherwise.
        assert_eq!(t.master, Some(("node7".into(), 29501)));
        let o = launch(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "n"),
            ("MASTER_PORT", "29500"),
            ("SETDINO_RDZV_PORT", "40000"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(o.master, Some(("n".into(), 40000)));
        let s = launch(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((s.rank, s.world, s.local_rank, s.master), (5, 8, 1, None));
        // A job of one task (any Slurm batch script) is not data-parallel.
        assert_eq!(
            launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")]).unwrap(),
            None
        );
        assert_eq!(launch(&[]).unwrap(), None);
    }

    #[test]
    fn a_rank_drives_its_local_gpu_or_the_only_one_it_sees() {
        let l = launch(&[("RANK", "5"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "1")])
            .unwrap()
            .unwrap();
        assert_eq!(l.device(4).unwrap(), 1);
        assert_eq!(l.device(1).unwrap(), 0);
        assert!(format!("{:#}", l.device(0).unwrap_err()).contains("no CUDA device"));
        let l3 = Launch { local_rank: 3, ..l };
        assert!(format!("{:#}", l3.device(2).unwrap_err()).contains("only 2 GPUs"));
    }

    #[test]
    fn inconsistent_variables_are_errors_that_name_them() {
        let e = |v: &[(&str, &str)]| format!("{:#}", launch(v).unwrap_err());
        assert!(e(&[("RANK", "4"), ("WORLD_SIZE", "4")]).contains("$RANK = 4 is not below"));
        assert!(e(&[("WORLD_SIZE", "2")]).contains("$RANK is not set"));
        assert!(e(&[("RANK", "x"), ("WORLD_SIZE", "2")]).contains("$RANK = 'x'"));
        assert!(
            e(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "a")])
                .contains("$MASTER_PORT is not")
        );
        assert!(e(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "a"),
            ("MASTER_PORT", "99999")
        ])
        .contains("not a port number"));
    }
}
