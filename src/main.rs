//! The `setdino` binary: parse the command line and hand over to `cli::run`.
fn main() -> std::process::ExitCode {
    setdino::cli::main()
}
