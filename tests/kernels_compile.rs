//! Correctness ladder rung 4: NVRTC compiles every kernel module for sm_90 with ptxas warnings (spills,
//! local memory) as errors; the `-v` report is parsed and held to a per-kernel register and shared-memory
//! budget; every declared entry point is present. Runs wherever libnvrtc is found (no GPU needed); skips
//! loudly without it, and fails instead when `REQUIRE_NVRTC=1` (CI).
use setdino::backend::gpu::nvrtc;
use setdino::backend::gpu::ALL_MODULES;

/// Registers per thread: 255 is the hardware limit; our f32 kernels stay far below. A kernel that needs
/// more than this has grown a problem worth a look.
const MAX_REGISTERS: u32 = 96;
/// Static shared memory per block, for kernels without an occupancy claim.
const MAX_SMEM: u32 = 16 * 1024;
/// sm_90: 64 K registers and 228 KiB of shared memory per SM, 48 KiB of static shared memory per block.
const SM_REGISTERS: u32 = 65536;
const SM_SMEM: u32 = 228 * 1024;
const MAX_STATIC_SMEM: u32 = 48 * 1024;

/// `__launch_bounds__(threads, blocks)` of entry `name` in `src`, if it has one with a block count.
fn launch_bounds(src: &str, name: &str) -> Option<(u32, u32)> {
    src.split("__global__ void __launch_bounds__(")
        .skip(1)
        .find_map(|part| {
            let (inner, rest) = part.split_once(')')?;
            let entry = rest.split('(').next()?.trim();
            if entry != name {
                return None;
            }
            let (t, b) = inner.split_once(',')?;
            Some((t.trim().parse().ok()?, b.trim().parse().ok()?))
        })
}

fn nvrtc_or_skip(test: &str) -> bool {
    if nvrtc::available() {
        return true;
    }
    assert!(
        std::env::var_os("REQUIRE_NVRTC").is_none(),
        "REQUIRE_NVRTC is set but libnvrtc.so.12 was not found (pip install --target .cuda-tools nvidia-cuda-nvrtc-cu12==12.9.86)"
    );
    eprintln!("SKIP {test}: libnvrtc not found");
    false
}

#[test]
fn every_kernel_compiles_for_sm90_within_budget() {
    if !nvrtc_or_skip("every_kernel_compiles_for_sm90_within_budget") {
        return;
    }
    let mut n = 0;
    for m in ALL_MODULES {
        let c = nvrtc::compile(m, "sm_90", true).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            c.cubin.len() > 100 && &c.cubin[..4] == b"\x7fELF",
            "{}: CUBIN is an ELF image",
            m.name
        );
        for e in m.entries {
            let k = c.report.iter().find(|k| k.name == *e).unwrap_or_else(|| {
                panic!("{}.cu: entry {e} missing from the ptxas report", m.name)
            });
            eprintln!(
                "{:<44} {:>3} regs {:>6} B smem {:>4} B stack",
                k.name, k.registers, k.smem_bytes, k.stack_bytes
            );
            if let Some((threads, blocks)) = launch_bounds(m.src, e) {
                // The occupancy the header claims must be the one the launch bounds ask for, and the
                // registers and shared memory ptxas reports must let that many blocks share an SM.
                let claim =
                    format!("Occupancy claimed: {blocks} blocks of {threads} threads per SM");
                assert!(m.src.contains(&claim), "{e}: header must state '{claim}'");
                assert!(
                    k.registers * threads * blocks <= SM_REGISTERS,
                    "{e}: {} registers × {threads} threads × {blocks} blocks exceed an SM",
                    k.registers
                );
                assert!(
                    k.smem_bytes <= MAX_STATIC_SMEM && k.smem_bytes * blocks <= SM_SMEM,
                    "{e}: {} B shared memory × {blocks} blocks",
                    k.smem_bytes
                );
            } else {
                assert!(
                    k.registers > 0 && k.registers <= MAX_REGISTERS,
                    "{e}: {} registers",
                    k.registers
                );
                assert!(
                    k.smem_bytes <= MAX_SMEM,
                    "{e}: {} B static shared memory",
                    k.smem_bytes
                );
            }
            assert_eq!(k.spill_bytes, 0, "{e}: spills");
            n += 1;
        }
    }
    assert!(n >= 30, "only {n} entry points compiled");
}

#[test]
fn the_gate_rejects_local_memory_and_bad_syntax() {
    if !nvrtc_or_skip("the_gate_rejects_local_memory_and_bad_syntax") {
        return;
    }
    let common = include_str!("../kernels/common.cuh");
    // A data-dependent index into a 1 KiB per-thread array forces local memory (a stack frame).
    let local = format!(
        "{common}\nextern \"C\" __global__ void local_mem(float* out, const int* idx) {{\n  float a[256];\n  \
         for (int i = 0; i < 256; ++i) a[i] = out[i * blockDim.x];\n  a[idx[threadIdx.x] & 255] += 1.f;\n  \
         float s = 0.f;\n  for (int i = 0; i < 256; ++i) s += a[i] * out[i];\n  out[threadIdx.x] = s;\n}}\n"
    );
    let e = nvrtc::compile_src("local_mem", &local, "sm_90", true, &[])
        .err()
        .expect("local memory must fail the gate");
    let e = format!("{e}");
    assert!(
        e.contains("Local memory") || e.contains("stack frame"),
        "{e}"
    );
    let bad = format!("{common}\nextern \"C\" __global__ void broken(float* out) {{ out[0] = undefined_thing; }}\n");
    let e = nvrtc::compile_src("broken", &bad, "sm_90", true, &[])
        .err()
        .expect("syntax error must fail");
    assert!(format!("{e}").contains("undefined_thing"), "{e}");
}

#[test]
fn emulator_selftest_kernels_compile_with_tensor_core_instructions() {
    if !nvrtc_or_skip("emulator_selftest_kernels_compile_with_tensor_core_instructions") {
        return;
    }
    let Some(inc) = nvrtc::cuda_include_dir() else {
        assert!(
            std::env::var_os("REQUIRE_NVRTC").is_none(),
            "REQUIRE_NVRTC is set but cuda_bf16.h was not found"
        );
        eprintln!("SKIP: cuda_runtime headers not found (set CUDA_INCLUDE)");
        return;
    };
    let src = format!(
        "{}\n#line 1 \"kernels/simt/selftest.cu\"\n{}",
        include_str!("../kernels/common.cuh"),
        include_str!("../kernels/simt/selftest.cu")
    );
    let c = nvrtc::compile_src("selftest", &src, "sm_90", true, &[inc])
        .unwrap_or_else(|e| panic!("{e}"));
    for k in [
        "selftest_gemm_bf16_mma",
        "selftest_gemm_bf16_ldmatrix",
        "selftest_reduce_sum_f32",
    ] {
        assert!(c.report.iter().any(|r| r.name == k), "{k} missing");
    }
}
