//! The SIMT emulator itself (kernels/simt/selftest.cu): warp collectives, atomics, dynamic shared memory
//! poisoning, deadlock detection, race visibility under both schedules, and the bf16 mma.sync / ldmatrix
//! emulation against naive matmuls.
use crate::common::rand_vec_f32;
use crate::simt_set_schedule;

unsafe extern "C" {
    fn simt_selftest_reduce_sum(grid: u32, block: u32, x: *const f32, out: *mut f32, n: i32)
        -> i32;
    fn simt_selftest_warp_ops(out: *mut i32) -> i32;
    fn simt_selftest_read_uninit_smem(out: *mut f32, blocks: u32, threads: u32) -> i32;
    fn simt_selftest_racy_sum(x: *const f32, out: *mut f32) -> i32;
    fn simt_selftest_divergent_sync(out: *mut f32) -> i32;
    fn simt_selftest_gemm_bf16_mma(
        a: *const u16,
        b: *const u16,
        c: *mut f32,
        m: i32,
        n: i32,
        k: i32,
    ) -> i32;
    fn simt_selftest_gemm_bf16_ldmatrix(
        a: *const u16,
        b: *const u16,
        c: *mut f32,
        m: i32,
        n: i32,
        k: i32,
    ) -> i32;
    fn simt_last_error() -> *const std::os::raw::c_char;
}

fn last_error() -> String {
    // SAFETY: the emulator returns a NUL-terminated thread-local string.
    unsafe { std::ffi::CStr::from_ptr(simt_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}
fn f(x: u16) -> f64 {
    half::bf16::from_bits(x).to_f64()
}

#[test]
fn shuffles_smem_and_atomics_reduce_one_million() {
    reduce_check();
}

pub fn reduce_check() {
    let x = rand_vec_f32(1 << 20, 1, 1.0);
    let want: f64 = x.iter().map(|&v| v as f64).sum();
    let mut out = 0f32;
    // SAFETY: x has n elements; out is one float.
    let rc = unsafe { simt_selftest_reduce_sum(64, 256, x.as_ptr(), &mut out, x.len() as i32) };
    assert_eq!(rc, 0, "{}", last_error());
    assert!((out as f64 - want).abs() < 1e-2, "{out} vs {want}");
}

#[test]
fn warp_collectives_follow_cuda_semantics() {
    let mut out = vec![0i32; 32 * 6];
    // SAFETY: 32 threads write 6 ints each.
    assert_eq!(
        unsafe { simt_selftest_warp_ops(out.as_mut_ptr()) },
        0,
        "{}",
        last_error()
    );
    let ballot: u32 = (0..32).filter(|l| l % 3 == 0).map(|l| 1u32 << l).sum();
    for l in 0..32i32 {
        let r = &out[6 * l as usize..6 * l as usize + 6];
        assert_eq!(r[0], if l >= 1 { l - 1 } else { l }, "shfl_up lane {l}");
        assert_eq!(
            r[1],
            if l + 2 < 32 { l + 2 } else { l },
            "shfl_down lane {l}"
        );
        assert_eq!(r[2], l ^ 5, "shfl_xor lane {l}");
        assert_eq!(r[3] as u32, ballot, "ballot lane {l}");
        assert_eq!((r[4], r[5]), (1, 1), "any/all lane {l}");
    }
}

#[test]
fn dynamic_shared_memory_is_poisoned_per_block() {
    let mut out = vec![0f32; 3 * 64];
    // SAFETY: 3 blocks × 64 threads write one float each.
    assert_eq!(
        unsafe { simt_selftest_read_uninit_smem(out.as_mut_ptr(), 3, 64) },
        0,
        "{}",
        last_error()
    );
    assert!(
        out.iter().all(|v| v.to_bits() == 0xffff_ffff),
        "uninitialised smem reads 0xFF bytes (NaN)"
    );
}

#[test]
fn divergent_barrier_is_an_error_not_a_hang() {
    let mut out = vec![0f32; 256];
    // SAFETY: 256 threads write one float each.
    let rc = unsafe { simt_selftest_divergent_sync(out.as_mut_ptr()) };
    assert_ne!(rc, 0);
    let e = last_error();
    assert!(e.contains("deadlock"), "{e}");
}

#[test]
fn a_missing_barrier_shows_up_under_one_of_the_schedules() {
    let x: Vec<f32> = (0..64).map(|i| i as f32).collect();
    let want: f32 = x.iter().sum();
    let _g = crate::SCHEDULE_LOCK
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut results = Vec::new();
    for reverse in [0, 1] {
        let mut out = 0f32;
        // SAFETY: 64 inputs, one output; the schedule override is process-wide and restored below.
        unsafe {
            simt_set_schedule(reverse);
            assert_eq!(
                simt_selftest_racy_sum(x.as_ptr(), &mut out),
                0,
                "{}",
                last_error()
            );
        }
        results.push(out);
    }
    // SAFETY: back to following $SIMT_SCHEDULE.
    unsafe { simt_set_schedule(-1) };
    assert!(
        results.iter().any(|&r| r != want),
        "the race must be visible: {results:?} vs {want}"
    );
}

fn gemm_check(m: usize, n: usize, k: usize, ldmatrix: bool) {
    let a: Vec<u16> = rand_vec_f32(m * k, 3, 1.0).into_iter().map(bf16).collect();
    let b: Vec<u16> = rand_vec_f32(k * n, 4, 1.0).into_iter().map(bf16).collect();
    let mut c = vec![0f32; m * n];
    // SAFETY: buffers sized M·K, K·N, M·N; the shapes are multiples of the tile (asserted by the caller).
    let rc = unsafe {
        if ldmatrix {
            simt_selftest_gemm_bf16_ldmatrix(
                a.as_ptr(),
                b.as_ptr(),
                c.as_mut_ptr(),
                m as i32,
                n as i32,
                k as i32,
            )
        } else {
            simt_selftest_gemm_bf16_mma(
                a.as_ptr(),
                b.as_ptr(),
                c.as_mut_ptr(),
                m as i32,
                n as i32,
                k as i32,
            )
        }
    };
    assert_eq!(rc, 0, "{}", last_error());
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|p| f(a[i * k + p]) * f(b[p * n + j])).sum();
            assert!(
                (s - c[i * n + j] as f64).abs() < 1e-4,
                "({i},{j}) {s} vs {}",
                c[i * n + j]
            );
        }
    }
}

#[test]
fn mma_sync_bf16_matches_naive_matmul() {
    gemm_check(64, 64, 64, false);
}

#[test]
fn ldmatrix_mma_matches_naive_matmul() {
    gemm_check(64, 48, 80, true);
}

/// An overrun of a device buffer faults on the guard page behind it and comes back as an error that
/// names the kernel and the argument, instead of killing the test binary (here: `reduce_fill_f32`
/// told to fill 64 floats more than the buffer holds, through the raw launch that skips the backend's
/// bounds checks).
#[test]
fn out_of_bounds_write_is_an_error_naming_kernel_and_argument() {
    use setdino::backend::gpu::{Device, KArg, Kernel, LaunchCfg};
    let dev = setdino::backend::gpu::simt::Simt::new();
    let mut buf = dev.alloc_zeros(1024).unwrap();
    let p = dev.addr_mut(&mut buf);
    let e = dev
        .launch(
            Kernel::reduce_fill_f32,
            LaunchCfg::linear(1024 + 64),
            &[KArg::Ptr(p), KArg::F32(1.0), KArg::I32(1024 + 64)],
        )
        .expect_err("writing past the end must fail");
    let msg = format!("{e:#}");
    eprintln!("{msg}");
    assert!(msg.contains("reduce_fill_f32"), "{msg}");
    assert!(msg.contains("out-of-bounds"), "{msg}");
    assert!(msg.contains("argument 0 `buf`"), "{msg}");
    // The device stays usable: the in-bounds launch after the fault works.
    dev.launch(
        Kernel::reduce_fill_f32,
        LaunchCfg::linear(1024),
        &[KArg::Ptr(p), KArg::F32(2.0), KArg::I32(1024)],
    )
    .unwrap();
    assert!(dev.dtoh(&buf).unwrap().iter().all(|&x| x == 2.0));
}

/// Blocks carved from one arena (`Device::alloc_arena`) are one allocation, each still 256-byte
/// aligned and still followed by its own guard page: an overrun of the first block faults as it does
/// for a buffer of its own (rather than writing into the next block), and the blocks are disjoint.
#[test]
fn arena_blocks_are_one_allocation_and_each_keeps_its_guard_page() {
    use setdino::backend::gpu::{Device, KArg, Kernel, LaunchCfg};
    let dev = setdino::backend::gpu::simt::Simt::new();
    let sizes = [1024usize, 3, 5000, 1];
    let mut blocks = dev.alloc_arena(&sizes).unwrap();
    assert_eq!(blocks.len(), sizes.len());
    let own = dev.alloc_zeros(1024).unwrap();
    for (b, &n) in blocks.iter().zip(&sizes) {
        assert_eq!(dev.mem_len(b), n);
        assert_eq!(dev.addr(b) % 256, 0, "256-byte aligned");
        assert!(dev.same_allocation(b, &blocks[0]));
        assert!(!dev.same_allocation(b, &own));
        assert!(dev.dtoh(b).unwrap().iter().all(|&x| x == 0.0), "zeroed");
    }
    for (k, b) in blocks.iter_mut().enumerate() {
        let (p, n) = (dev.addr_mut(b), dev.mem_len(b));
        dev.launch(
            Kernel::reduce_fill_f32,
            LaunchCfg::linear(n),
            &[KArg::Ptr(p), KArg::F32(k as f32 + 1.0), KArg::I32(n as i32)],
        )
        .unwrap();
    }
    for (k, b) in blocks.iter().enumerate() {
        assert!(
            dev.dtoh(b).unwrap().iter().all(|&x| x == k as f32 + 1.0),
            "block {k} holds only its own fill"
        );
    }
    let p = dev.addr_mut(&mut blocks[0]);
    let e = dev
        .launch(
            Kernel::reduce_fill_f32,
            LaunchCfg::linear(1024 + 64),
            &[KArg::Ptr(p), KArg::F32(9.0), KArg::I32(1024 + 64)],
        )
        .expect_err("writing past a carved block must fault");
    assert!(format!("{e:#}").contains("out-of-bounds"), "{e:#}");
    assert!(dev.dtoh(&blocks[1]).unwrap().iter().all(|&x| x == 2.0));
    // The mapping outlives the first block dropped.
    let rest = blocks.split_off(1);
    drop(blocks);
    assert!(dev.dtoh(&rest[2]).unwrap().iter().all(|&x| x == 4.0));
}
