//! Correctness ladder rung 4: NVRTC compiles every kernel module for sm_90 with ptxas warnings (spills,
//! local memory) as errors; the `-v` report is parsed and held to a per-kernel register and shared-memory
//! budget; every declared entry point is present; and the SASS (cuobjdump of the CUBIN) shows tensor-core
//! instructions in the bf16 kernels and no local memory anywhere. Runs wherever libnvrtc is found (no GPU needed); skips
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

/// `cuobjdump` from the pip wheel `nvidia-cuda-cuobjdump` (with `nvidia-cuda-nvdisasm` beside it), as
/// `.ci/run` installs them into `.cuda-tools/`, or `$CUOBJDUMP`.
fn cuobjdump() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("CUOBJDUMP") {
        return Some(p.into());
    }
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".cuda-tools/nvidia/cu13/bin/cuobjdump");
    p.exists().then_some(p)
}

/// SASS of every entry point of `cubin`, by function name.
fn sass_by_function(tool: &std::path::Path, cubin: &[u8], module: &str) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(format!("{module}.cubin"));
    std::fs::write(&path, cubin).expect("write cubin");
    let bin_dir = tool.parent().expect("cuobjdump dir");
    let path_env = match std::env::var_os("PATH") {
        Some(p) => format!("{}:{}", bin_dir.display(), p.to_string_lossy()),
        None => bin_dir.display().to_string(),
    };
    let out = std::process::Command::new(tool)
        .arg("-sass")
        .arg(&path)
        .env("PATH", path_env)
        .output()
        .expect("run cuobjdump");
    assert!(
        out.status.success(),
        "cuobjdump -sass {module}.cubin: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut funcs: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix("Function : ") {
            funcs.push((name.trim().to_string(), String::new()));
        } else if let Some((_, body)) = funcs.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    funcs
}

/// Whether `sass` has an instruction whose opcode is `op` (with any `.suffix`).
fn has_op(sass: &str, op: &str) -> bool {
    sass.split(|c: char| c.is_whitespace() || c == ';' || c == '}' || c == '{')
        .any(|t| t == op || t.strip_prefix(op).is_some_and(|r| r.starts_with('.')))
}

#[test]
fn sass_has_tensor_cores_in_bf16_gemm_and_attention_and_no_local_memory() {
    if !nvrtc_or_skip("sass_has_tensor_cores_in_bf16_gemm_and_attention_and_no_local_memory") {
        return;
    }
    let Some(tool) = cuobjdump() else {
        assert!(
            std::env::var_os("REQUIRE_SASS").is_none(),
            "REQUIRE_SASS is set but cuobjdump was not found (pip install --target .cuda-tools nvidia-cuda-cuobjdump==13.5.37 nvidia-cuda-nvdisasm==13.5.37)"
        );
        eprintln!("SKIP: cuobjdump not found");
        return;
    };
    // The bf16 GEMMs: tensor cores, ldmatrix and cp.async (LDGSTS) must all show in the SASS.
    let gemms = [
        "matmul_forward_bf16",
        "matmul_forward_gelu_bf16",
        "matmul_forward_residual_bf16",
        "matmul_backward_input_bf16",
        "matmul_backward_weight_bf16",
    ];
    let mut seen = 0;
    for m in ALL_MODULES {
        let c = nvrtc::compile(m, "sm_90", true).unwrap_or_else(|e| panic!("{e}"));
        let funcs = sass_by_function(&tool, &c.cubin, m.name);
        for e in m.entries {
            let (_, sass) = funcs
                .iter()
                .find(|(n, _)| n == e)
                .unwrap_or_else(|| panic!("{e}: not in the SASS of {}.cu", m.name));
            assert!(sass.len() > 50, "{e}: empty SASS");
            for op in ["LDL", "STL"] {
                assert!(!has_op(sass, op), "{e}: uses local memory ({op})");
            }
            let hmma = sass.matches("HMMA.16816.F32.BF16").count();
            let ldsm = has_op(sass, "LDSM");
            let ldgsts = has_op(sass, "LDGSTS");
            if gemms.contains(e) {
                eprintln!("{e}: {hmma} HMMA.16816.F32.BF16, LDSM {ldsm}, LDGSTS {ldgsts}");
                // 2 m16 × 4 n8 tiles × 2 k16 steps per 32-wide k-tile: 16 HMMA in the unrolled loop body.
                assert!(hmma >= 16, "{e}: {hmma} HMMA.16816.F32.BF16");
                assert!(ldsm, "{e}: no LDSM (ldmatrix)");
                assert!(ldgsts, "{e}: no LDGSTS (cp.async)");
                seen += 1;
            } else if e.starts_with("attention_") && e.ends_with("_bf16") {
                eprintln!("{e}: {hmma} HMMA.16816.F32.BF16, LDSM {ldsm}");
                // QKᵀ and PV (forward), and dP, dQ, dV, dK (backward) on tensor cores, operands by ldmatrix.
                assert!(hmma >= 16, "{e}: {hmma} HMMA.16816.F32.BF16");
                assert!(ldsm, "{e}: no LDSM (ldmatrix)");
                seen += 1;
            } else if e.ends_with("_f32") {
                assert_eq!(hmma, 0, "{e}: an f32 kernel with tensor-core instructions");
            }
        }
    }
    assert_eq!(
        seen,
        gemms.len() + 2,
        "every bf16 GEMM and attention kernel was inspected"
    );
}
