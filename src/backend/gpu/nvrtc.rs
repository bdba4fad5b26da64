//! NVRTC: compiles the kernel modules for a real architecture (`sm_XY`) to CUBIN, and reads ptxas's
//! `-v` report (registers, shared memory, spills) into a per-kernel table. Used by the CUDA device at
//! start-up and by the static gate in `tests/kernels_compile.rs` and `setdino check`, which run wherever
//! libnvrtc is found, GPU or not.
//!
//! libnvrtc is found by cudarc's own `dlopen` search (`LD_LIBRARY_PATH`), or preloaded here from
//! `$SETDINO_NVRTC_LIB`, or from the pip wheel under `.cuda-tools/` (what `.ci/run` installs).
use super::KernelModule;
use anyhow::{anyhow, bail, Result};
use std::ffi::{CStr, CString};
use std::path::PathBuf;

/// One kernel's resource use, parsed from `ptxas info : Used N registers, … M bytes smem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelReport {
    pub module: String,
    pub name: String,
    pub registers: u32,
    pub smem_bytes: u32,
    pub stack_bytes: u32,
    pub spill_bytes: u32,
}

/// A compiled module.
pub struct Compiled {
    pub cubin: Vec<u8>,
    pub log: String,
    pub report: Vec<KernelReport>,
}

fn candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("SETDINO_NVRTC_LIB") {
        v.push(PathBuf::from(p));
    }
    let rel = "nvidia/cuda_nvrtc/lib/libnvrtc.so.12";
    if let Ok(cwd) = std::env::current_dir() {
        v.push(cwd.join(".cuda-tools").join(rel));
    }
    v.push(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(".cuda-tools")
            .join(rel),
    );
    v
}

/// Makes libnvrtc loadable (preloading it by absolute path if needed) and says whether it is.
pub fn available() -> bool {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for p in candidates() {
            if p.exists() {
                if let Ok(c) = CString::new(p.to_string_lossy().as_bytes()) {
                    // SAFETY: dlopen of an existing shared library by absolute path; the handle is kept
                    // for the life of the process, so cudarc's later dlopen("libnvrtc.so.12") finds it
                    // by SONAME.
                    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
                    if !h.is_null() {
                        break;
                    }
                }
            }
        }
    });
    // SAFETY: a probe that dlopens the library names and returns false when none loads; it never panics.
    let present = std::panic::catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() });
    present.unwrap_or(false)
}

/// NVRTC's version, e.g. (12, 9).
pub fn version() -> Result<(i32, i32)> {
    let (mut a, mut b) = (0, 0);
    // SAFETY: plain out-parameters.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut a, &mut b) }
        .result()
        .map_err(|e| anyhow!("nvrtcVersion: {e:?}"))?;
    Ok((a, b))
}

/// Compiles `m` for `arch` (e.g. "sm_90"). With `gate`, ptxas warnings (spills, local memory) are errors.
pub fn compile(m: &KernelModule, arch: &str, gate: bool) -> Result<Compiled> {
    compile_src(m.name, m.src, arch, gate, &[])
}

/// Compiles kernel text `src` (reported as `kernels/<name>.cu`) with extra include directories.
pub fn compile_src(
    name: &str,
    src: &str,
    arch: &str,
    gate: bool,
    include_paths: &[String],
) -> Result<Compiled> {
    use cudarc::nvrtc::{result, sys};
    let m = KernelModule {
        name: leak(name),
        src: leak(src),
        entries: &[],
    };
    if !available() {
        bail!("libnvrtc.so.12 not found; HINT: pip install --target .cuda-tools nvidia-cuda-nvrtc-cu12==12.9.86 or set SETDINO_NVRTC_LIB");
    }
    let src = CString::new(m.src).map_err(|_| anyhow!("{}: NUL in source", m.name))?;
    let name = CString::new(format!("{}.cu", m.name)).map_err(|_| anyhow!("bad module name"))?;
    let prog = result::create_program(&src, Some(&name))
        .map_err(|e| anyhow!("{}: create_program: {e:?}", m.name))?;
    let mut opts = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        "-lineinfo".to_string(),
        "--ptxas-options=-v".to_string(),
    ];
    for p in include_paths {
        opts.push(format!("--include-path={p}"));
    }
    if gate {
        opts.push("--ptxas-options=--warn-on-spills".into());
        opts.push("--ptxas-options=--warn-on-local-memory-usage".into());
        opts.push("--ptxas-options=--warning-as-error".into());
    }
    // SAFETY: `prog` is a live program; the options are valid C strings built by cudarc.
    let r = unsafe { result::compile_program(prog, &opts) };
    // SAFETY: the log of a compiled (or failed) program.
    let log = unsafe { result::get_program_log(prog) }.map_err(|e| anyhow!("{e:?}"))?;
    // SAFETY: get_program_log returns a NUL-terminated buffer.
    let log = unsafe { CStr::from_ptr(log.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    if let Err(e) = r {
        // SAFETY: destroying the program we created.
        let _ = unsafe { result::destroy_program(prog) };
        bail!(
            "NVRTC failed to compile kernels/{}.cu for {arch}: {e:?}\n{log}",
            m.name
        );
    }
    let mut n = 0usize;
    // SAFETY: out-parameter size of the CUBIN of a successfully compiled program.
    unsafe { sys::nvrtcGetCUBINSize(prog, &mut n) }
        .result()
        .map_err(|e| anyhow!("{e:?}"))?;
    let mut cubin = vec![0u8; n];
    // SAFETY: `cubin` has the size NVRTC reported.
    unsafe { sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut _) }
        .result()
        .map_err(|e| anyhow!("{e:?}"))?;
    // SAFETY: destroying the program we created.
    unsafe { result::destroy_program(prog) }.map_err(|e| anyhow!("{e:?}"))?;
    let report = parse_report(m.name, &log);
    Ok(Compiled { cubin, log, report })
}

fn leak(s: &str) -> &'static str {
    // Compilation is rare (start-up, tests); keeping the module text alive for the process is fine.
    Box::leak(s.to_string().into_boxed_str())
}

/// Where the cuda_runtime headers are (for `cuda_bf16.h`): `$CUDA_INCLUDE` or the pip wheel in `.cuda-tools/`.
pub fn cuda_include_dir() -> Option<String> {
    if let Ok(p) = std::env::var("CUDA_INCLUDE") {
        return Some(p);
    }
    let rel = ".cuda-tools/nvidia/cuda_runtime/include";
    let mut c = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)];
    if let Ok(cwd) = std::env::current_dir() {
        c.insert(0, cwd.join(rel));
    }
    c.into_iter()
        .find(|p| p.join("cuda_bf16.h").exists())
        .map(|p| p.to_string_lossy().into_owned())
}

/// Parses ptxas `-v` output into one line per entry point.
pub fn parse_report(module: &str, log: &str) -> Vec<KernelReport> {
    let mut out: Vec<KernelReport> = Vec::new();
    let num_before = |s: &str, pat: &str| -> Option<u32> {
        let pos = s.find(pat)?;
        s[..pos].split_whitespace().last()?.parse().ok()
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            out.push(KernelReport {
                module: module.to_string(),
                name: rest.split('\'').next().unwrap_or("").to_string(),
                registers: 0,
                smem_bytes: 0,
                stack_bytes: 0,
                spill_bytes: 0,
            });
        } else if let Some(k) = out.last_mut() {
            if line.contains("Used ") && line.contains("registers") {
                k.registers = num_before(line, " registers").unwrap_or(0);
                k.smem_bytes = num_before(line, " bytes smem").unwrap_or(0);
            }
            if line.contains("bytes stack frame") {
                k.stack_bytes = num_before(line, " bytes stack frame").unwrap_or(0);
                k.spill_bytes = num_before(line, " bytes spill stores").unwrap_or(0);
            }
        }
    }
    out
}
