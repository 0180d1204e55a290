//! `tessera users import FILE`: reads JSON Lines in batches, each batch one transaction;
//! reports bad lines (by number) on standard error and goes on; shows progress on a terminal.
//! A JSON array or CSV is refused at once; bad lines, or no account at all, end non-zero.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::output::Out;
use super::CliError;
use crate::service::admin::AdminService;
use crate::service::import::{parse_import_line, wrong_format, ImportCounts};

/// Accounts per transaction: large enough that commits are a small part of the time, small
/// enough that a batch is a short write (SQLite's other writers wait for it).
const BATCH: usize = 2000;

pub async fn import(admin: &AdminService, path: &Path, out: &mut Out) -> Result<(), CliError> {
    let io = |source| CliError::Io {
        context: format!("cannot read {}", path.display()),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    // A file in another format is refused as a whole, not reported line by line.
    let first = reader.fill_buf().map_err(io)?;
    let first = String::from_utf8_lossy(&first[..first.len().min(4096)]);
    if let Some(why) = wrong_format(first.lines().next().unwrap_or_default()) {
        return Err(CliError::Invalid(format!("{}: {why}", path.display())));
    }
    let bar = progress_bar(size);
    let started = Instant::now();
    let now = admin.now();
    let mut counts = ImportCounts::default();
    let mut batch = Vec::with_capacity(BATCH);
    let (mut raw, mut number, mut read) = (Vec::new(), 0u64, 0u64);
    loop {
        raw.clear();
        let n = reader.read_until(b'\n', &mut raw).map_err(io)?;
        if n > 0 {
            number += 1;
            read += n as u64;
            let parsed = std::str::from_utf8(&raw)
                .map_err(|_| "not UTF-8".to_owned())
                .and_then(|line| match line.trim() {
                    "" => Ok(None),
                    line => parse_import_line(line, now).map(Some),
                });
            match parsed {
                Ok(Some(user)) => batch.push(user),
                Ok(None) => {}
                Err(why) => {
                    counts.bad += 1;
                    bar.suspend(|| eprintln!("line {number}: {why}"));
                }
            }
        }
        if batch.len() == BATCH || (n == 0 && !batch.is_empty()) {
            let inserted = admin.import_users(&batch).await?;
            counts.imported += inserted;
            counts.already_present += batch.len() as u64 - inserted;
            batch.clear();
            bar.set_position(read);
            bar.set_message(rate(number, started.elapsed()));
        }
        if n == 0 {
            break;
        }
    }
    bar.finish_and_clear();
    admin.record_import(&path.display().to_string(), counts).await;
    let elapsed = started.elapsed();
    out.line(&format!(
        "{counts}{}",
        if counts.imported == 0 {
            " (nothing changed)"
        } else {
            ""
        }
    ))?;
    eprintln!(
        "{number} lines in {:.1} s ({})",
        elapsed.as_secs_f64(),
        rate(number, elapsed)
    );
    // A script must notice: bad lines were skipped, or the file held no account at all. (A
    // rerun that finds every account present already is a success.)
    if counts.bad > 0 {
        return Err(CliError::Invalid(format!(
            "{} line(s) were not imported (see above)",
            counts.bad
        )));
    }
    if counts.imported + counts.already_present == 0 {
        return Err(CliError::Invalid(format!("{} holds no account", path.display())));
    }
    Ok(())
}

fn rate(lines: u64, elapsed: Duration) -> String {
    let per_second = lines as f64 / elapsed.as_secs_f64().max(0.001);
    format!("{per_second:.0} lines/s")
}

/// A bar over the file's bytes, with the line rate and the time left; hidden when standard
/// error is not a terminal (a log file gets the summary only).
fn progress_bar(size: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(size);
    let style =
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {msg}, ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message("0 lines/s");
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
