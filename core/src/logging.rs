//! Log output on stderr: plain text (coloured only on a terminal) or JSON
//! lines. A log file or journald gets no ANSI codes, and every value is
//! escaped ([`crate::logsafe::Escaped`]) so one event is one line.

use clap::ValueEnum;
use std::io::IsTerminal;

/// How log events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; colour only when stderr is a terminal and NO_COLOR is unset.
    #[default]
    Text,
    /// One JSON object per line (journald, log shippers).
    Json,
}

/// The logging options every binary takes.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Log format on stderr: `text` (colour only on a terminal) or `json` (one object per line).
    /// The level comes from SIGIL_LOG (default `info`).
    #[arg(long, global = true, env = "SIGIL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Colour only for a terminal, and never when NO_COLOR is set to anything (no-color.org).
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber.
pub fn init(format: LogFormat) {
    use tracing_subscriber::field::MakeExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIGIL_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => {
            let colour = use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
            let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
                let text = format!("{value:?}");
                let safe = crate::logsafe::Escaped(&text);
                if field.name() == "message" {
                    write!(w, "{safe}")
                } else {
                    write!(w, "{}={safe}", field.name())
                }
            })
            .delimited(" ");
            builder.with_ansi(colour).fmt_fields(fields).try_init()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }
}
