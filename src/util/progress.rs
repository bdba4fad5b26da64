//! Progress bars: shown on a terminal, hidden otherwise (callers print plain lines instead).
use std::io::IsTerminal;

/// A bar over `len` items of `unit`, with rate and ETA; hidden when stderr is not a terminal.
pub fn bar(len: u64, unit: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len);
    let tpl = format!(
        "{{bar:30}} {{pos}}/{{len}} {unit}  {{per_sec}}  [{{elapsed_precise}} < {{eta_precise}}]"
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(&tpl) {
        b.set_style(style);
    }
    b
}
