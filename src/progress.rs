//! Logs for operators and progress bars for people. Bars draw only on a terminal; log
//! lines are printed above any bar in flight, so the two never garble each other.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

static MULTI: OnceLock<MultiProgress> = OnceLock::new();

/// Set when several tenants run at once: stderr lines then start with `[tenant]`.
static PREFIX_TENANT: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The tenant this thread works for, and its log file.
    static TENANT: RefCell<Option<(String, Option<File>)>> = const { RefCell::new(None) };
}

/// While alive, this thread's log lines are tagged with the tenant and also appended to
/// its log file (`lake/<tenant>/logs/etl.log`).
pub struct TenantScope;

pub fn tenant_scope(tenant: &str, log_file: Option<&Path>) -> TenantScope {
    let file = log_file.and_then(|path| {
        path.parent().map(std::fs::create_dir_all);
        OpenOptions::new().create(true).append(true).open(path).ok()
    });
    TENANT.with(|t| *t.borrow_mut() = Some((tenant.to_string(), file)));
    TenantScope
}

impl Drop for TenantScope {
    fn drop(&mut self) {
        TENANT.with(|t| *t.borrow_mut() = None);
    }
}

/// Tag stderr lines with their tenant (several tenants run at once).
pub fn prefix_tenants(on: bool) {
    PREFIX_TENANT.store(on, Ordering::SeqCst);
}

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
    /// What is written to the tenant's log file (info and up at least).
    inner: env_logger::Logger,
    /// What is shown on stderr (`-q`: warnings and errors only).
    console: log::LevelFilter,
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
        TENANT.with(|t| {
            let mut t = t.borrow_mut();
            let tenant = t.as_ref().map(|(name, _)| name.clone());
            let line = match self.format {
                LogFormat::Text => format!("{now} {:<5} {}", record.level(), record.args()),
                LogFormat::Json => {
                    let mut obj = serde_json::json!({
                        "time": now.to_string(),
                        "level": record.level().to_string(),
                        "message": record.args().to_string(),
                    });
                    if let Some(tenant) = &tenant {
                        obj["tenant"] = serde_json::Value::String(tenant.clone());
                    }
                    obj.to_string()
                }
            };
            if let Some((_, Some(file))) = t.as_mut() {
                let _ = writeln!(file, "{line}");
            }
            let shown = match (&tenant, PREFIX_TENANT.load(Ordering::SeqCst), self.format) {
                (Some(tenant), true, LogFormat::Text) => format!("[{tenant}] {line}"),
                _ => line,
            };
            if record.level() <= self.console {
                multi().suspend(|| eprintln!("{shown}"));
            }
        });
    }
    fn flush(&self) {}
}

/// Installs the logger. `verbosity` (stderr): -1 quiet (warnings and errors), 0 normal, 1
/// debug (each model timed), 2+ trace (each statement of a large transform timed). The tenant's log file gets info and up whatever the verbosity, debug with `-v`.
pub fn init_logging(verbosity: i8, format: LogFormat) {
    let console = match verbosity {
        i8::MIN..=-1 => log::LevelFilter::Warn,
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let inner = env_logger::Builder::new()
        .filter_level(console.max(log::LevelFilter::Info))
        .parse_env("ETL_LOG")
        .build();
    let max = inner.filter();
    let console = console.min(max);
    if log::set_boxed_logger(Box::new(Logger {
        inner,
        console,
        format,
    }))
    .is_ok()
    {
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
