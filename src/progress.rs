//! Logs for operators and progress bars for people. Bars draw only on a terminal; log
//! lines are printed above any bar in flight, so the two never garble each other.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

static MULTI: OnceLock<MultiProgress> = OnceLock::new();

fn multi() -> &'static MultiProgress {
    MULTI.get_or_init(|| {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        MultiProgress::with_draw_target(target)
    })
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

struct Logger {
    inner: env_logger::Logger,
    format: LogFormat,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.inner.enabled(metadata)
    }
    fn log(&self, record: &log::Record) {
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        let line = match self.format {
            LogFormat::Text => format!("{now} {:<5} {}", record.level(), record.args()),
            LogFormat::Json => serde_json::json!({
                "time": now.to_string(),
                "level": record.level().to_string(),
                "message": record.args().to_string(),
            })
            .to_string(),
        };
        multi().suspend(|| eprintln!("{line}"));
    }
    fn flush(&self) {}
}

/// Installs the logger. `verbosity`: -1 quiet (warnings and errors), 0 normal, 1+ debug.
pub fn init_logging(verbosity: i8, format: LogFormat) {
    let level = match verbosity {
        i8::MIN..=-1 => log::LevelFilter::Warn,
        0 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    let inner = env_logger::Builder::new()
        .filter_level(level)
        .parse_env("ETL_LOG")
        .build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Logger { inner, format })).is_ok() {
        log::set_max_level(max);
    }
}

/// Hands out bars and spinners that show only on a terminal.
#[derive(Clone, Default)]
pub struct Progress;

impl Progress {
    pub fn bar(&self, len: u64, unit: &str) -> ProgressBar {
        let bar = multi().add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "  {{bar:30}} {{pos}}/{{len}} {unit} {{elapsed}}"
            ))
            .expect("static template"),
        );
        bar
    }

    pub fn spinner(&self, message: &str) -> ProgressBar {
        let bar = multi().add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("  {spinner} {msg} {elapsed}").expect("static template"),
        );
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }
}
