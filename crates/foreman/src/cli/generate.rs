//! `foreman completions SHELL` and `foreman man`: a shell completion script and a
//! man page, generated from the same clap definition the binary parses, so they
//! never fall behind its flags. `scripts/install.sh` installs both.

use clap::Args;
use clap_complete::Shell;

use super::output::{CliError, Output};

/// `foreman completions <shell>`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Writes the completion script of `command` for `shell` to standard output.
pub fn completions(mut command: clap::Command, shell: Shell) -> std::process::ExitCode {
    let name = command.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    finish(Output::stdout().bytes(&script))
}

/// Writes the man page (roff) of `command` to standard output.
pub fn man(command: clap::Command) -> std::process::ExitCode {
    let mut page = Vec::new();
    let rendered = clap_mangen::Man::new(command)
        .render(&mut page)
        .map_err(|e| CliError::failed(format!("cannot render the man page: {e}")));
    finish(rendered.and_then(|()| Output::stdout().bytes(&page)))
}

fn finish(outcome: Result<(), CliError>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => error.report(),
    }
}
