//! Progress on stderr for long work (`produce` from a large file, `verify`,
//! `dlq replay`), shown only when stderr is a terminal: a pipe, a file or a
//! log collector gets nothing, so scripts see the same stderr as before
//! (nothing, or the one `durq: <error>` line).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How often a spinner redraws while the work gives no news.
const TICK: Duration = Duration::from_millis(100);

/// A bar or a spinner on stderr, or nothing; cleared when dropped, so the
/// command's own output is all that remains on the screen.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar of `total` bytes, for work whose size is known.
    pub fn bytes(what: &str, total: u64) -> Progress {
        Progress::start(|| {
            let style = ProgressStyle::with_template("{msg} {wide_bar} {binary_bytes}/{binary_total_bytes} {eta}")
                .expect("a valid template");
            ProgressBar::new(total).with_style(style).with_message(what.to_owned())
        })
    }

    /// A spinner with the time spent, for work whose size is not known.
    pub fn spinner(what: &str) -> Progress {
        let progress = Progress::start(|| {
            let style = ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("a valid template");
            ProgressBar::new_spinner().with_style(style).with_message(what.to_owned())
        });
        // Only after the first draw: with a steady tick on, `tick` leaves
        // drawing to the ticker thread, which short work can outrun (then
        // nothing is ever drawn).
        if let Some(bar) = &progress.0 {
            bar.enable_steady_tick(TICK);
        }
        progress
    }

    fn start(bar: impl FnOnce() -> ProgressBar) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = bar();
        // Drawn now, not at the first tick or advance: short work shows too.
        bar.tick();
        Progress(Some(bar))
    }

    /// `n` more units done.
    pub fn advance(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
