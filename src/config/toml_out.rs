//! `tessera config`: the effective settings as the TOML file `--config` reads, each line
//! written by its setting's type (`Setting::print`), secrets redacted there.

use super::Config;

impl Config {
    /// The settings as a TOML file (the keys `--config` reads), secrets redacted: what
    /// `tessera config` prints. Fed back through `--config`, it reproduces this configuration
    /// except for the redacted secrets and the unset values (commented out).
    pub fn to_toml_redacted(&self) -> String {
        let mut out = String::from(
            "# Effective configuration: flags over TESSERA_* variables over the file over defaults.\n\
             # Secrets are redacted.\n",
        );
        for line in self.printed_lines().into_iter().flatten() {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}
