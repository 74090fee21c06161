//! Health data private on disk. A tenant's lake holds identifiable records (raw rows as
//! sent, quarantined records, history), so everything `etl` writes there is owner-only
//! whatever the umask: the process runs under umask 077, and a lake left looser by an
//! earlier version or by hand is tightened at the next run. Only the published outputs may
//! be opened, to one group, by `paths.outputs_group`. Secrets files are held to the same
//! standard as an SSH key: a `<manifest>.env` that others can read is refused.

use std::ffi::CString;
use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The umask of every `etl` process: files 0600, folders 0700.
pub const UMASK: libc::mode_t = 0o077;

/// Makes everything this process creates owner-only (files 0600, folders 0700), DuckDB's
/// database, WAL and spill files included. PostgreSQL does the same with its data folder.
pub fn restrict_umask() {
    // SAFETY: umask only swaps the process's file-mode mask.
    unsafe { libc::umask(UMASK) };
}

/// A group the published outputs are opened to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
}

impl Group {
    /// Looks a group up by name in the system's group database.
    pub fn lookup(name: &str) -> Option<Group> {
        let c = CString::new(name).ok()?;
        // SAFETY: getgrnam returns a pointer into static storage or null; read at once.
        let entry = unsafe { libc::getgrnam(c.as_ptr()) };
        if entry.is_null() {
            return None;
        }
        Some(Group {
            name: name.to_string(),
            // SAFETY: non-null, points at a valid group entry.
            gid: unsafe { (*entry).gr_gid },
        })
    }
}

/// A file that holds secrets and that other accounts could read or change.
#[derive(Debug, thiserror::Error)]
#[error("{path} can be read or changed by other accounts (mode {mode:04o}), and it holds the tenant's secrets: refused. Fix it with `chmod 600 {path}`")]
pub struct ExposedSecrets {
    pub path: String,
    pub mode: u32,
}

/// Refuses a `<manifest>.env` (the secrets cron's entry loads) that group or others can
/// read or write. No such file is fine: secrets may come from the environment.
pub fn check_env_file(manifest: &Path) -> Result<(), ExposedSecrets> {
    let env = manifest.with_extension("env");
    match std::fs::metadata(&env) {
        Ok(meta) if meta.mode() & 0o077 != 0 => Err(ExposedSecrets {
            path: env.display().to_string(),
            mode: meta.mode() & 0o7777,
        }),
        _ => Ok(()),
    }
}

/// Warnings for secrets written as literal text in a manifest file that other accounts
/// can read: the value belongs in the environment (`${VAR}`) or in `<manifest>.env`.
pub fn literal_secret_warnings(files: &[PathBuf], literal_keys: &[String]) -> Vec<String> {
    if literal_keys.is_empty() {
        return Vec::new();
    }
    files
        .iter()
        .filter_map(|file| {
            let mode = std::fs::metadata(file).ok()?.mode() & 0o7777;
            (mode & 0o044 != 0).then(|| {
                format!(
                    "{} (mode {mode:04o}, readable by other accounts) holds {} as literal text: \
                     write `${{VAR}}` and put the value in the environment or in {}, or `chmod 600 {}`",
                    file.display(),
                    literal_keys
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    files[0].with_extension("env").display(),
                    file.display(),
                )
            })
        })
        .collect()
}

/// One path whose mode or group was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: PathBuf,
    pub from: u32,
    pub to: u32,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04o} -> {:04o}",
            self.path.display(),
            self.from,
            self.to
        )
    }
}

/// The modes a tenant's lake should have: owner-only, except the published outputs
/// (`<lake>/omop`) when they are opened to a group, which then reads them (0750 / 0640) and
/// may pass through the lake's own folder (0710) to reach them.
#[derive(Debug, Clone)]
pub struct Policy {
    pub lake: PathBuf,
    pub outputs_group: Option<Group>,
}

impl Policy {
    fn outputs(&self) -> PathBuf {
        self.lake.join("omop")
    }

    /// (mode, group) a path should have.
    fn wanted(&self, path: &Path, is_dir: bool) -> (u32, Option<u32>) {
        match &self.outputs_group {
            Some(group) if path == self.lake => (0o710, Some(group.gid)),
            Some(group) if path.starts_with(self.outputs()) => {
                (if is_dir { 0o750 } else { 0o640 }, Some(group.gid))
            }
            _ => (if is_dir { 0o700 } else { 0o600 }, None),
        }
    }

    /// Brings every path under the lake to its mode (and group), returning what changed.
    /// Symbolic links are left alone (their mode means nothing; what they point at is
    /// visited on its own). Only group and other bits are changed, never the owner's.
    pub fn apply(&self) -> Result<Vec<Change>> {
        let mut changes = Vec::new();
        if self.lake.is_dir() {
            self.visit(&self.lake, &mut changes)?;
        }
        Ok(changes)
    }

    fn visit(&self, path: &Path, changes: &mut Vec<Change>) -> Result<()> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            // gone meanwhile (a spill file): nothing to protect
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let (mode, gid) = self.wanted(path, meta.is_dir());
        if let Some(gid) = gid.filter(|g| *g != meta.gid()) {
            let c = CString::new(path.as_os_str().as_encoded_bytes())?;
            // SAFETY: a valid C path; -1 keeps the owner.
            if unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) } != 0 {
                return Err(std::io::Error::last_os_error()).with_context(|| {
                    format!(
                        "cannot give {} to the group of `paths.outputs_group` (gid {gid}): \
                         the account running etl must belong to that group",
                        path.display()
                    )
                });
            }
        }
        let current = meta.mode() & 0o7777;
        let next = (current & 0o700) | (mode & 0o077) | if meta.is_dir() { 0o700 } else { 0 };
        if next != current {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(next))
                .with_context(|| format!("cannot change the mode of {}", path.display()))?;
            changes.push(Change {
                path: path.to_path_buf(),
                from: current,
                to: next,
            });
        }
        if meta.is_dir() {
            let entries = std::fs::read_dir(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut children: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            children.sort();
            for child in children {
                self.visit(&child, changes)?;
            }
        }
        Ok(())
    }
}

/// The one warning a run prints when it had to tighten a lake it found looser.
pub fn tightened_warning(lake: &Path, changes: &[Change]) -> Option<String> {
    let loosened: Vec<&Change> = changes
        .iter()
        .filter(|c| c.to & !c.from & 0o077 == 0)
        .collect();
    if loosened.is_empty() {
        return None;
    }
    let shown: Vec<String> = loosened
        .iter()
        .take(5)
        .map(|c| {
            let rel = c.path.strip_prefix(lake).unwrap_or(&c.path);
            let rel = if rel.as_os_str().is_empty() {
                Path::new(".")
            } else {
                rel
            };
            format!("{} {:04o} -> {:04o}", rel.display(), c.from, c.to)
        })
        .collect();
    let more = if loosened.len() > shown.len() {
        format!(", and {} more", loosened.len() - shown.len())
    } else {
        String::new()
    };
    Some(format!(
        "{} paths under {} could be read by other accounts; made owner-only (it holds health data): {}{more}",
        loosened.len(),
        lake.display(),
        shown.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    fn chmod(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn a_loose_lake_becomes_owner_only_and_says_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("acme");
        std::fs::create_dir_all(lake.join("omop/runs/r1")).unwrap();
        std::fs::write(lake.join("lake.duckdb"), b"x").unwrap();
        std::fs::write(lake.join("omop/runs/r1/provider.parquet"), b"x").unwrap();
        std::os::unix::fs::symlink("runs/r1", lake.join("omop/current")).unwrap();
        for p in ["", "omop", "omop/runs", "omop/runs/r1"] {
            chmod(&lake.join(p), 0o755);
        }
        chmod(&lake.join("lake.duckdb"), 0o644);
        chmod(&lake.join("omop/runs/r1/provider.parquet"), 0o664);

        let policy = Policy {
            lake: lake.clone(),
            outputs_group: None,
        };
        let changes = policy.apply().unwrap();
        assert_eq!(changes.len(), 6);
        assert_eq!(mode(&lake), 0o700);
        assert_eq!(mode(&lake.join("lake.duckdb")), 0o600);
        assert_eq!(mode(&lake.join("omop/runs/r1/provider.parquet")), 0o600);
        assert_eq!(
            tightened_warning(&lake, &changes).unwrap(),
            format!(
                "6 paths under {} could be read by other accounts; made owner-only (it holds health data): \
                 . 0755 -> 0700, lake.duckdb 0644 -> 0600, omop 0755 -> 0700, omop/runs 0755 -> 0700, \
                 omop/runs/r1 0755 -> 0700, and 1 more",
                lake.display()
            )
        );
        // a second pass finds nothing to do
        assert!(policy.apply().unwrap().is_empty());
    }

    #[test]
    fn outputs_opened_to_a_group_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("acme");
        std::fs::create_dir_all(lake.join("omop/runs/r1")).unwrap();
        std::fs::create_dir_all(lake.join("logs")).unwrap();
        std::fs::write(lake.join("omop/runs/r1/provider.parquet"), b"x").unwrap();
        std::fs::write(lake.join("logs/etl.log"), b"x").unwrap();
        // SAFETY: getgid has no preconditions.
        let gid = unsafe { libc::getgid() };
        let policy = Policy {
            lake: lake.clone(),
            outputs_group: Some(Group {
                name: "mine".into(),
                gid,
            }),
        };
        policy.apply().unwrap();
        assert_eq!(mode(&lake), 0o710);
        assert_eq!(mode(&lake.join("omop")), 0o750);
        assert_eq!(mode(&lake.join("omop/runs/r1")), 0o750);
        assert_eq!(mode(&lake.join("omop/runs/r1/provider.parquet")), 0o640);
        assert_eq!(mode(&lake.join("logs")) & 0o077, 0);
        assert_eq!(mode(&lake.join("logs/etl.log")) & 0o077, 0);
        // opening outputs is not a tightening: no warning
        let again = Policy {
            lake: lake.clone(),
            outputs_group: None,
        };
        let changes = again.apply().unwrap();
        assert!(tightened_warning(&lake, &changes).is_some());
        assert_eq!(mode(&lake.join("omop/runs/r1/provider.parquet")), 0o600);
    }

    #[test]
    fn an_env_file_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("acme.toml");
        std::fs::write(&manifest, "").unwrap();
        assert!(check_env_file(&manifest).is_ok(), "no .env is fine");
        let env = dir.path().join("acme.env");
        std::fs::write(&env, "X=1\n").unwrap();
        chmod(&env, 0o640);
        let err = check_env_file(&manifest).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{0} can be read or changed by other accounts (mode 0640), and it holds the tenant's secrets: refused. Fix it with `chmod 600 {0}`",
                env.display()
            )
        );
        chmod(&env, 0o600);
        assert!(check_env_file(&manifest).is_ok());
    }
}
