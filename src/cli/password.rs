//! Reading a password for `tessera users add`: from standard input (`--password-stdin`, for
//! scripts) or asked for on the terminal. Never echoed, never logged: the terminal's echo is
//! off while it is typed, and the text goes straight into a [`Password`].

use std::io::{BufRead, IsTerminal, Write};

use super::CliError;
use crate::domain::Password;

/// Reads the password of a new account. With `from_stdin`, the first line of standard input;
/// otherwise, asked for twice on the terminal (and refused when there is none).
pub fn read_new_password(from_stdin: bool) -> Result<Password, CliError> {
    let interactive = std::io::stdin().is_terminal();
    let text = if from_stdin {
        read_line(interactive.then_some("Password: "))?
    } else if interactive {
        let first = read_line(Some("Password: "))?;
        if read_line(Some("Password (again): "))? != first {
            return Err(CliError::Invalid("the two passwords differ".into()));
        }
        first
    } else {
        return Err(CliError::Invalid(
            "no terminal to ask for the password on: pipe it to standard input with --password-stdin".into(),
        ));
    };
    Password::parse(&text).map_err(|e| CliError::Invalid(format!("password {}", e.message)))
}

/// One line of standard input without its line ending; with echo off when it is a terminal.
fn read_line(prompt: Option<&str>) -> Result<String, CliError> {
    let io = |source| CliError::Io {
        context: "cannot read the password".into(),
        source,
    };
    let _echo_off = match prompt {
        Some(prompt) => {
            eprint!("{prompt}");
            let _ = std::io::stderr().flush();
            Some(EchoOff::new().map_err(io)?)
        }
        None => None,
    };
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(io)?;
    if prompt.is_some() {
        // The Enter the user typed was not echoed either.
        eprintln!();
    }
    let end = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(end);
    Ok(line)
}

/// Turns the terminal's echo off until dropped.
#[cfg(unix)]
struct EchoOff(rustix::termios::Termios);

#[cfg(unix)]
impl EchoOff {
    fn new() -> std::io::Result<EchoOff> {
        use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
        let saved = tcgetattr(std::io::stdin())?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        tcsetattr(std::io::stdin(), OptionalActions::Now, &quiet)?;
        Ok(EchoOff(saved))
    }
}

#[cfg(unix)]
impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, &self.0);
    }
}

#[cfg(not(unix))]
struct EchoOff;

#[cfg(not(unix))]
impl EchoOff {
    fn new() -> std::io::Result<EchoOff> {
        Err(std::io::Error::other(
            "cannot turn the terminal's echo off here: use --password-stdin",
        ))
    }
}
