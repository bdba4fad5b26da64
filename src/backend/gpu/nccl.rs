//! NCCL collectives between processes, one per GPU (`comm::Communicator` on the CUDA backend).
//!
//! NCCL is loaded at run time through cudarc (`dynamic-loading`), like the driver and NVRTC, so a build
//! needs no NCCL and a single-GPU run never touches it. The ranks agree on the unique id through
//! `comm::rendezvous` (rank 0 serves it on `MASTER_ADDR`, port `MASTER_PORT + 1`), then `ncclCommInitRank` builds the
//! communicator on the device's one stream: collectives are ordered with the step's kernels on that stream,
//! so no extra synchronisation is needed (NCCL docs, "CUDA stream semantics").
//!
//! The gradients are averaged with `ncclAllReduce(…, ncclAvg)` in place on the flat f32 gradient buffer
//! (NCCL ≥ 2.10); the teacher rows are gathered with `ncclAllGather` (rank-major output).
use super::cuda::{Cuda, CudaMem};
use super::{GpuBackend, GpuBuf};
use crate::backend::DType;
use crate::comm::{rendezvous, Communicator, Launch};
use anyhow::{anyhow, bail, ensure, Context, Result};
use cudarc::nccl::safe::{Comm, Id, ReduceOp};
use std::time::Duration;

/// How long the ranks wait for each other at start-up (rendezvous and `ncclCommInitRank`).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(600);

/// One rank's NCCL communicator over the CUDA backend's stream.
pub struct NcclComm {
    comm: Comm,
}

/// Whether `libnccl` can be loaded, and if not, what to do.
pub fn check_library() -> Result<()> {
    // SAFETY: only tries to dlopen the candidate names; nothing is called.
    if unsafe { cudarc::nccl::sys::is_culib_present() } {
        return Ok(());
    }
    bail!(
        "NCCL is not loadable: cudarc looks for libnccl.so (or libnccl.so.12 …) on LD_LIBRARY_PATH; HINT: \
         pip install nvidia-nccl-cu12, then `ln -s libnccl.so.2 $NCCL_LIB/libnccl.so` in its nvidia/nccl/lib \
         directory (the wheel ships only libnccl.so.2) and add that directory to LD_LIBRARY_PATH"
    )
}

impl NcclComm {
    /// Joins the job described by `launch` on `dev` (the GPU `launch.local_rank`): rendezvous for the id,
    /// then `ncclCommInitRank`. Blocks until every rank has joined.
    pub fn init(dev: &Cuda, launch: &Launch) -> Result<NcclComm> {
        check_library()?;
        let Some((addr, port)) = launch.master.clone() else {
            bail!(
                "a {}-rank job needs MASTER_ADDR and MASTER_PORT (where rank 0 serves the NCCL id); torchrun sets them, a Slurm script exports them (see the README's recipe)",
                launch.world
            );
        };
        dev.context()
            .bind_to_thread()
            .map_err(|e| anyhow!("binding the CUDA context: {e:?}"))?;
        let (bytes, server) = if launch.rank == 0 {
            let id = Id::new().map_err(|e| anyhow!("ncclGetUniqueId: {e:?}"))?;
            let mut bytes = [0u8; rendezvous::ID_BYTES];
            for (b, &c) in bytes.iter_mut().zip(id.internal().iter()) {
                *b = c.to_ne_bytes()[0];
            }
            let world = launch.world;
            let server =
                std::thread::spawn(move || rendezvous::serve(port, world, &bytes, STARTUP_TIMEOUT));
            (bytes, Some(server))
        } else {
            (
                rendezvous::fetch(&addr, port, launch.world, STARTUP_TIMEOUT)?,
                None,
            )
        };
        let mut internal = [0 as std::ffi::c_char; rendezvous::ID_BYTES];
        for (c, &b) in internal.iter_mut().zip(bytes.iter()) {
            *c = std::ffi::c_char::from_ne_bytes([b]);
        }
        let comm = Comm::from_rank(
            dev.stream().clone(),
            launch.rank,
            launch.world,
            Id::uninit(internal),
        )
        .map_err(|e| {
            anyhow!(
                "ncclCommInitRank (rank {} of {}): {e:?}",
                launch.rank,
                launch.world
            )
        })?;
        if let Some(s) = server {
            s.join()
                .map_err(|_| anyhow!("the rendezvous thread panicked"))??;
        }
        Ok(NcclComm { comm })
    }
}

fn f32_mem<'a>(b: &'a GpuBuf<CudaMem>, what: &str) -> Result<&'a CudaMem> {
    ensure!(
        b.dtype == DType::F32,
        "NCCL {what}: an f32 buffer is expected, got {:?}",
        b.dtype
    );
    Ok(b.mem())
}

impl Communicator<GpuBackend<Cuda>> for NcclComm {
    fn rank(&self) -> usize {
        self.comm.rank()
    }
    fn world(&self) -> usize {
        self.comm.world_size()
    }
    fn all_reduce_mean(&self, _be: &GpuBackend<Cuda>, buf: &mut GpuBuf<CudaMem>) -> Result<()> {
        f32_mem(buf, "all-reduce")?;
        let n = buf.len;
        let mut view = buf.mem_mut().slice_mut(0..n);
        self.comm
            .all_reduce_in_place(&mut view, &ReduceOp::Avg)
            .map_err(|e| anyhow!("ncclAllReduce of {n} floats: {e:?}"))?;
        Ok(())
    }
    fn all_gather(
        &self,
        _be: &GpuBackend<Cuda>,
        send: &GpuBuf<CudaMem>,
        recv: &mut GpuBuf<CudaMem>,
    ) -> Result<()> {
        let n = send.len;
        let world = self.world();
        f32_mem(send, "all-gather")?;
        f32_mem(recv, "all-gather")?;
        ensure!(
            recv.len == n * world,
            "NCCL all-gather: recv holds {} floats, {world} ranks × {n} expected",
            recv.len
        );
        let src = send.mem().slice(0..n);
        let mut dst = recv.mem_mut().slice_mut(0..n * world);
        self.comm
            .all_gather(&src, &mut dst)
            .map_err(|e| anyhow!("ncclAllGather of {n} floats per rank: {e:?}"))
            .context("data-parallel teacher rows")?;
        Ok(())
    }
}
