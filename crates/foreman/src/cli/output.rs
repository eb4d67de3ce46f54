//! What the CLI's commands write, and how they fail.
//!
//! Every line goes through [`Output`], never `println!`: `println!` panics when the
//! reader of standard output has gone away (`foreman jobs list | head` once `head`
//! has its lines), while [`Output`] turns that `EPIPE` into
//! [`CliError::OutputClosed`], which ends the command quietly with success, as the
//! usual Unix tools do. Rust ignores `SIGPIPE`, so a closed pipe shows up as that
//! write error rather than killing the process.

use std::fmt::Display;
use std::io::{self, Write};

/// Why a command stopped, and the exit code that says so.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line was wrong (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// foreman could not be reached or refused, or the job did not succeed (exit code 1).
    #[error("{0}")]
    Failed(String),
    /// Whoever read standard output stopped reading: not an error (exit code 0, silent).
    #[error("standard output was closed by its reader")]
    OutputClosed,
    /// Writing standard output failed otherwise (a full disk, say; exit code 1).
    #[error("cannot write to standard output: {0}")]
    Output(io::Error),
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::Usage(message.into())
    }

    pub fn failed(message: impl Into<String>) -> CliError {
        CliError::Failed(message.into())
    }

    /// The process's exit code for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::OutputClosed => 0,
            CliError::Usage(_) => 2,
            CliError::Failed(_) | CliError::Output(_) => 1,
        }
    }

    /// Reports the failure on standard error (nothing for a closed output) and gives
    /// the exit code. A closed standard error is ignored too.
    pub fn report(&self) -> std::process::ExitCode {
        if !matches!(self, CliError::OutputClosed) {
            let _ = writeln!(io::stderr(), "foreman: {self}");
        }
        std::process::ExitCode::from(self.exit_code())
    }
}

impl From<io::Error> for CliError {
    fn from(error: io::Error) -> CliError {
        if error.kind() == io::ErrorKind::BrokenPipe {
            CliError::OutputClosed
        } else {
            CliError::Output(error)
        }
    }
}

/// Standard output (or any writer, in tests), written a line at a time.
pub struct Output<W: Write = io::Stdout> {
    writer: W,
}

impl Output<io::Stdout> {
    pub fn stdout() -> Output<io::Stdout> {
        Output::new(io::stdout())
    }
}

impl<W: Write> Output<W> {
    pub fn new(writer: W) -> Output<W> {
        Output { writer }
    }

    /// Writes `text` and a newline, and flushes, so a reader sees each line at once
    /// and a closed reader is noticed at the first line it misses.
    pub fn line(&mut self, text: impl Display) -> Result<(), CliError> {
        writeln!(self.writer, "{text}")?;
        self.writer.flush()?;
        Ok(())
    }

    /// Writes bytes as they are (a generated completion script or man page).
    pub fn bytes(&mut self, bytes: &[u8]) -> Result<(), CliError> {
        self.writer.write_all(bytes)?;
        self.writer.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that has gone away: every write fails as a closed pipe does.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct FullDisk;

    impl Write for FullDisk {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::StorageFull))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_is_a_quiet_success_and_other_write_errors_fail() {
        let closed = Output::new(ClosedPipe).line("a row").unwrap_err();
        assert!(matches!(closed, CliError::OutputClosed), "{closed:?}");
        assert_eq!(closed.exit_code(), 0);
        let full = Output::new(FullDisk).line("a row").unwrap_err();
        assert!(matches!(full, CliError::Output(_)), "{full:?}");
        assert_eq!(full.exit_code(), 1);
        let mut written = Vec::new();
        Output::new(&mut written).line("a row").unwrap();
        assert_eq!(written, b"a row\n");
    }
}
