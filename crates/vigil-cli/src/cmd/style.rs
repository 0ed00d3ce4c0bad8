//! Terminal styles shared by every subcommand (stripped automatically when the output
//! is not a terminal, through `anstream`).

use anstyle::{AnsiColor, Style};

/// Errors and failed checks.
pub(crate) const ERROR: Style = AnsiColor::Red.on_default().bold();
/// Passed checks.
pub(crate) const OK: Style = AnsiColor::Green.on_default().bold();
/// Warnings and notes.
pub(crate) const WARN: Style = AnsiColor::Yellow.on_default().bold();
/// Emphasis for names and values.
pub(crate) const EM: Style = Style::new().bold();
