//! How the administrative commands print: aligned tables for people, or JSON for scripts
//! (`--json`: one JSON object per line, JSON Lines, so that a listing of a million accounts
//! streams and `jq` reads it as it comes).

use std::io::{self, Write};

use serde::Serialize;

use super::CliError;

/// Standard output, buffered. A reader that goes away (`| head`) ends the command quietly.
pub struct Out {
    out: io::BufWriter<io::StdoutLock<'static>>,
}

impl Out {
    pub fn new() -> Out {
        Out {
            out: io::BufWriter::new(io::stdout().lock()),
        }
    }

    pub fn line(&mut self, text: &str) -> Result<(), CliError> {
        writeln!(self.out, "{text}").map_err(write_error)
    }

    pub fn json(&mut self, value: &impl Serialize) -> Result<(), CliError> {
        let text = serde_json::to_string(value).map_err(|e| CliError::Invalid(e.to_string()))?;
        self.line(&text)
    }

    pub fn finish(mut self) -> Result<(), CliError> {
        self.out.flush().map_err(write_error)
    }
}

impl Default for Out {
    fn default() -> Self {
        Out::new()
    }
}

fn write_error(source: io::Error) -> CliError {
    if source.kind() == io::ErrorKind::BrokenPipe {
        CliError::ReaderGone
    } else {
        CliError::Io {
            context: "cannot write to standard output".into(),
            source,
        }
    }
}

/// A table printed a page at a time: column widths come from the first page and only grow,
/// so a listing too long to hold in memory still lines up (mostly) and streams.
pub struct Table {
    widths: Vec<usize>,
    header: Option<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            widths: header.iter().map(|h| h.chars().count()).collect(),
            header: Some(header.iter().map(|h| h.to_string()).collect()),
        }
    }

    /// Prints rows (the header before the first page).
    pub fn print(&mut self, out: &mut Out, rows: &[Vec<String>]) -> Result<(), CliError> {
        for row in rows {
            for (width, cell) in self.widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        if let Some(header) = self.header.take() {
            self.row(out, &header)?;
        }
        for row in rows {
            self.row(out, row)?;
        }
        Ok(())
    }

    fn row(&self, out: &mut Out, cells: &[String]) -> Result<(), CliError> {
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(&self.widths).enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.line(line.trim_end())
    }
}

/// A missing value in a table.
pub fn or_dash(value: Option<String>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or_else(|| "-".into())
}
