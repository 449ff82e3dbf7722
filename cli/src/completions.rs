//! `durq completions`: the shell completion script, from the same clap
//! definition the command parses with, so it never lags behind it.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::{Cli, CliResult, stream_error};

/// Print a completion script for SHELL on stdout.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  durq completions bash > ~/.local/share/bash-completion/completions/durq\n  \
                        durq completions zsh > ~/.zfunc/_durq\n  \
                        durq completions fish > ~/.config/fish/completions/durq.fish")]
pub struct Args {
    /// The shell to complete for.
    shell: Shell,
}

pub fn run(args: Args) -> CliResult<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "durq", &mut script);
    let mut out = io::stdout().lock();
    out.write_all(&script).and_then(|()| out.flush()).map_err(stream_error("writing stdout"))?;
    Ok(())
}
