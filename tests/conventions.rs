//! Layout conventions (conventions.md §5.3, §5.10), enforced: every `kernels/*.cu` starts with a header
//! block naming the file, its entry points, its CPU twin and its tests; every entry point is
//! `extern "C"`, prefixed by the file stem, suffixed `_f32` or `_bf16`, documented in the header, and belongs to a
//! `Backend` method (the entry name starts with the method name); the twin and test files exist; no
//! kernel includes a header.
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn backend_methods() -> Vec<String> {
    let src = std::fs::read_to_string(root().join("src/backend/mod.rs")).expect("backend/mod.rs");
    src.lines()
        .filter_map(|l| l.trim().strip_prefix("fn "))
        .filter_map(|l| l.split('(').next())
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn every_kernel_file_follows_the_conventions() {
    let methods = backend_methods();
    assert!(
        methods.len() > 20,
        "parsed {} Backend methods",
        methods.len()
    );
    let mut files: Vec<_> = std::fs::read_dir(root().join("kernels"))
        .expect("kernels/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "kernel families: {}", files.len());
    let mut problems = Vec::new();
    for f in &files {
        let stem = f
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("stem")
            .to_string();
        let src = std::fs::read_to_string(f).expect("read");
        let header: Vec<&str> = src.lines().take_while(|l| l.starts_with("//")).collect();
        let header_text = header.join("\n");
        if !header
            .first()
            .is_some_and(|l| l.starts_with(&format!("// {stem}.cu: ")))
        {
            problems.push(format!(
                "{stem}.cu: header must start with '// {stem}.cu: <what it is>'"
            ));
        }
        for tag in ["Reference:", "launch:", "CPU twin:", "Tests:"] {
            if !header_text.contains(tag) {
                problems.push(format!("{stem}.cu: header lacks '{tag}'"));
            }
        }
        if let Some(twin) = header_text
            .split("CPU twin: ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
        {
            if !root().join(twin).exists() {
                problems.push(format!("{stem}.cu: CPU twin {twin} does not exist"));
            }
        }
        let test = format!("tests/parity/{stem}.rs");
        if !root().join(&test).exists() || !header_text.contains(&test) {
            problems.push(format!("{stem}.cu: needs {test}, named in its header"));
        }
        if src.lines().any(|l| l.trim_start().starts_with("#include")) {
            problems.push(format!(
                "{stem}.cu: #include is not allowed (NVRTC has no system headers)"
            ));
        }
        let mut count = 0;
        for part in src.split("__global__").skip(1) {
            let before_paren = part.split('(').next().unwrap_or("");
            let name = if before_paren.contains("__launch_bounds__") {
                part.split(')')
                    .nth(1)
                    .and_then(|s| s.split('(').next())
                    .unwrap_or("")
            } else {
                before_paren
            };
            let name = name.split_whitespace().last().unwrap_or("").to_string();
            count += 1;
            if !name.starts_with(&format!("{stem}_"))
                || !(name.ends_with("_f32") || name.ends_with("_bf16"))
            {
                problems.push(format!(
                    "{stem}.cu: entry '{name}' must be {stem}_<op>_f32 or {stem}_<op>_bf16"
                ));
            }
            if !header_text.contains(&format!("// {name}(")) {
                problems.push(format!(
                    "{stem}.cu: entry '{name}' is not documented in the header"
                ));
            }
            let base = name.trim_end_matches("_f32").trim_end_matches("_bf16");
            let owner = methods
                .iter()
                .any(|m| base.starts_with(m.as_str()) || m == "fill" && base == "reduce_fill");
            if !owner {
                problems.push(format!(
                    "{stem}.cu: entry '{name}' belongs to no Backend method"
                ));
            }
        }
        if count == 0 {
            problems.push(format!("{stem}.cu: no entry points"));
        }
        if !src.contains("extern \"C\" __global__") {
            problems.push(format!("{stem}.cu: entry points must be extern \"C\""));
        }
    }
    assert!(
        problems.is_empty(),
        "convention violations:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_backend_method_has_a_kernel_or_is_host_side() {
    let host_side = [
        "name",
        "precision",
        "zeros",
        "zeros_act",
        "dtype",
        "keep_bf16_copy",
        // the f32 GEMM kernels at every precision
        "matmul_forward_full",
        "matmul_backward_full",
        "upload",
        "download",
        "download_f64",
        "buf_len",
        "copy_of",
        "copy",
        // bookkeeping of the GPU backend (the pool, the counters)
        "release_pooled",
        "settle_arena",
        "counts",
        "is_device",
        "uninit",
        "uninit_act",
        "upload_u16",
        "upload_scalars",
        "upload_step_inputs",
        // graph capture (stream capture and cuGraphLaunch on CUDA, a recorded op list on simt)
        "capture_begin",
        "capture_end",
        "replay",
    ];
    for m in backend_methods() {
        if host_side.contains(&m.as_str()) || m == "fill" {
            continue;
        }
        assert!(
            setdino::backend::gpu::KERNEL_NAMES
                .iter()
                .any(|k| k.starts_with(m.as_str())),
            "Backend::{m} has no kernel ({m}*_f32 or {m}*_bf16)"
        );
    }
}
