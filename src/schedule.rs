//! `etl schedule`: crontab entries that run tenants unattended. Each tenant gets one marked
//! block (`# BEGIN etl tenant=…` … `# END etl tenant=…`) that scheduling again replaces and
//! `--remove` deletes; every other line of the crontab is left as it was. Entries use
//! absolute paths, append to the tenant's `lake/<tenant>/logs/cron.log`, read the
//! tenant's secrets from `<manifest>.env` when that file exists (it must not be committed),
//! and rely on the run lock, so a night that overruns cannot start a second run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::manifest::Manifest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// Every day at HH:MM, tenants staggered by `stagger` minutes.
    Daily {
        hour: u32,
        minute: u32,
        stagger: u32,
    },
    /// Every hour at minute MM, staggered.
    Hourly { minute: u32, stagger: u32 },
    /// A cron expression used as it is.
    Cron(String),
}

impl When {
    /// The five cron fields for the `i`-th tenant.
    pub fn fields(&self, i: u32) -> String {
        match self {
            When::Daily {
                hour,
                minute,
                stagger,
            } => {
                let total = (hour * 60 + minute + i * stagger) % (24 * 60);
                format!("{} {} * * *", total % 60, total / 60)
            }
            When::Hourly { minute, stagger } => format!("{} * * * *", (minute + i * stagger) % 60),
            When::Cron(expr) => expr.clone(),
        }
    }
}

/// Parses `HH:MM`.
pub fn parse_at(at: &str) -> Result<(u32, u32)> {
    let parsed = at
        .split_once(':')
        .and_then(|(h, m)| Some((h.parse::<u32>().ok()?, m.parse::<u32>().ok()?)));
    match parsed {
        Some((h, m)) if h < 24 && m < 60 => Ok((h, m)),
        _ => Err(
            crate::run::UsageError(format!("--at {at:?}: expected HH:MM, 00:00 to 23:59")).into(),
        ),
    }
}

/// Checks a cron expression has five fields of cron characters (the crontab command
/// checks the rest when the table is installed).
pub fn check_cron(expr: &str) -> Result<()> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let ok = fields.len() == 5
        && fields.iter().all(|f| {
            f.chars()
                .all(|c| c.is_ascii_alphanumeric() || "*/,-".contains(c))
        });
    if !ok {
        return Err(crate::run::UsageError(format!(
            "--cron {expr:?}: expected five cron fields, such as \"30 2 * * *\""
        ))
        .into());
    }
    Ok(())
}

fn begin(tenant: &str) -> String {
    format!("# BEGIN etl tenant={tenant}")
}

fn end(tenant: &str) -> String {
    format!("# END etl tenant={tenant}")
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

/// The block of one tenant.
pub fn block(manifest: &Manifest, when: &When, i: u32, etl: &Path) -> Result<String> {
    let path = manifest
        .path
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", manifest.path.display()))?;
    let lake = std::path::absolute(&manifest.lake_dir)?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let env_file = path.with_extension("env");
    let log = lake.join("logs").join("cron.log");
    // cron runs /bin/sh with a bare environment (and its own umask: 077 keeps the log and
    // its folder owner-only); no `%` (cron would cut the line there)
    let command = format!(
        "umask 077 && cd {dir} && mkdir -p {logs} && {{ [ ! -f {env} ] || {{ set -a; . {env}; set +a; }}; }} && {etl} run {manifest} >> {log} 2>&1",
        dir = quote(&dir),
        logs = quote(&lake.join("logs")),
        env = quote(&env_file),
        etl = quote(etl),
        manifest = quote(&path),
        log = quote(&log),
    );
    if command.contains('%') {
        bail!(
            "a path of tenant `{}` contains `%`, which cron cannot run",
            manifest.tenant
        );
    }
    Ok(format!(
        "{}\n# {} ({}), scheduled by `etl schedule`; change it with `etl schedule`\n{} {}\n{}\n",
        begin(&manifest.tenant),
        manifest.tenant,
        path.display(),
        when.fields(i),
        command,
        end(&manifest.tenant)
    ))
}

/// Removes the tenant's block, if any, from a crontab text.
pub fn without(crontab: &str, tenant: &str) -> String {
    let (b, e) = (begin(tenant), end(tenant));
    let mut out = String::new();
    let mut inside = false;
    for line in crontab.lines() {
        if line == b {
            inside = true;
        } else if inside && line == e {
            inside = false;
        } else if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every tenant with a block in a crontab text.
pub fn tenants(crontab: &str) -> Vec<String> {
    crontab
        .lines()
        .filter_map(|l| l.strip_prefix("# BEGIN etl tenant="))
        .map(str::to_string)
        .collect()
}

/// The blocks of a crontab text.
pub fn blocks(crontab: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in crontab.lines() {
        if line.starts_with("# BEGIN etl tenant=") {
            inside = true;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
        if line.starts_with("# END etl tenant=") {
            inside = false;
        }
    }
    out
}

/// The current crontab (empty when there is none).
pub fn read() -> Result<String> {
    let out = Command::new("crontab")
        .arg("-l")
        .output()
        .context("cannot run `crontab`: install cron (`just setup` does, as root) and try again")?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        // `crontab -l` fails when the user has no crontab yet: that is an empty one
        Ok(String::new())
    }
}

pub fn write(text: &str) -> Result<()> {
    let mut child = Command::new("crontab")
        .arg("-")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `crontab`")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "crontab refused the new table: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Installs (replacing) the blocks of these tenants; returns the new crontab.
pub fn install(manifests: &[Manifest], when: &When, etl: &Path) -> Result<String> {
    let mut text = read()?;
    for m in manifests {
        text = without(&text, &m.tenant);
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    // Staggered against every tenant already scheduled, not only those of this call: each
    // tenant takes the first slot at which no other etl entry starts.
    let mut taken = start_times(&text);
    let staggered = when.fields(0) != when.fields(1);
    let mut next = 0;
    for m in manifests {
        let mut slot = next;
        while staggered && taken.contains(&when.fields(slot)) && slot < next + 24 * 60 {
            slot += 1;
        }
        taken.push(when.fields(slot));
        text.push_str(&block(m, when, slot, etl)?);
        next = slot + 1;
    }
    write(&text)?;
    Ok(text)
}

/// When each etl entry of a crontab text starts: its five time fields.
fn start_times(crontab: &str) -> Vec<String> {
    blocks(crontab)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().take(5).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Removes the blocks of these tenants (all etl blocks when `tenants` is None).
pub fn remove(tenants_to_remove: Option<&[String]>) -> Result<Vec<String>> {
    let mut text = read()?;
    let present = tenants(&text);
    let targets: Vec<String> = match tenants_to_remove {
        Some(list) => list
            .iter()
            .filter(|t| present.contains(t))
            .cloned()
            .collect(),
        None => present,
    };
    for t in &targets {
        text = without(&text, t);
    }
    write(&text)?;
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_entries_are_staggered_and_wrap_at_midnight() {
        let when = When::Daily {
            hour: 23,
            minute: 50,
            stagger: 5,
        };
        assert_eq!(when.fields(0), "50 23 * * *");
        assert_eq!(when.fields(1), "55 23 * * *");
        assert_eq!(when.fields(2), "0 0 * * *");
        assert_eq!(
            When::Hourly {
                minute: 55,
                stagger: 10
            }
            .fields(1),
            "5 * * * *"
        );
    }

    #[test]
    fn a_block_is_removed_and_other_lines_kept() {
        let crontab = "0 5 * * * backup\n# BEGIN etl tenant=acme\n# x\n1 2 * * * run\n# END etl tenant=acme\n# mine\n";
        assert_eq!(without(crontab, "acme"), "0 5 * * * backup\n# mine\n");
        assert_eq!(tenants(crontab), ["acme"]);
        assert_eq!(without(crontab, "other"), crontab);
    }

    #[test]
    fn times_and_expressions_are_checked() {
        assert_eq!(parse_at("02:30").unwrap(), (2, 30));
        assert!(parse_at("24:00").is_err());
        assert!(parse_at("2h30").is_err());
        assert!(check_cron("*/15 * * * 1-5").is_ok());
        assert!(check_cron("* * *").is_err());
        assert!(check_cron("0 2 * * * ; rm").is_err());
    }
}
