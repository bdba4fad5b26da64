//! `--backend` selection never panics: without a CUDA driver `auto` falls back to the CPU with a reason
//! and `cuda` is a clean error; unknown names list the choices.
use setdino::backend::select::{decide, run_on, Choice, OnBackend};
use setdino::backend::Backend;

struct Name;
impl OnBackend for Name {
    type Out = String;
    fn run<B: Backend>(self, be: B) -> anyhow::Result<String> {
        Ok(be.name())
    }
}

fn have_driver() -> bool {
    setdino::backend::gpu::cuda::probe(0).is_ok()
}

#[test]
fn auto_falls_back_to_cpu_with_a_reason_when_there_is_no_gpu() {
    let (choice, reason) = decide("auto").expect("auto never fails");
    if have_driver() {
        assert_eq!(choice, Choice::Cuda);
    } else {
        assert_eq!(choice, Choice::Cpu);
        assert!(reason.contains("no usable GPU"), "{reason}");
        assert!(run_on("auto", Name)
            .expect("runs on the CPU")
            .starts_with("cpu"));
    }
}

#[test]
fn explicit_cuda_without_a_driver_is_an_error_not_a_panic() {
    if have_driver() {
        return;
    }
    let r = std::panic::catch_unwind(|| run_on("cuda", Name));
    let inner = r.expect("must not panic");
    let e = inner.expect_err("no driver: an error");
    assert!(
        format!("{e:#}").contains("CUDA") || format!("{e:#}").contains("cuda"),
        "{e:#}"
    );
}

#[test]
fn simt_and_cpu_are_always_available_and_unknown_names_are_rejected() {
    assert!(run_on("simt", Name).expect("simt").starts_with("simt"));
    assert!(run_on("cpu", Name).expect("cpu").starts_with("cpu"));
    let e = decide("tpu").expect_err("unknown");
    assert!(format!("{e}").contains("auto, cpu, cuda or simt"), "{e}");
}
