//! DuckDB extensions whose signature was checked once, so later runs load them without
//! checking it again.
//!
//! DuckDB checks a loaded extension's signature by hashing the whole file: for the
//! Postgres extension (50 MB) that is 150 ms of CPU, a quarter of a run with nothing new
//! at 1M rows. A lake's engine ([`crate::engine::Engine::open`]) therefore loads extensions
//! with DuckDB's own check turned off, each one only from a file it verified itself: a
//! file is verified by loading it into a throwaway in-memory DuckDB that does check
//! signatures, and the file's identity (size, modification and change times, device and
//! inode) is recorded next to the lake, in `verified-extensions.json`. A file whose
//! identity differs from its record (replaced, rewritten, touched) is verified again
//! before it is loaded; one that fails the check is never loaded. Extensions are then
//! never loaded automatically by that engine: every load goes through
//! [`crate::engine::Engine::load_extension`].

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::engine::literal;

/// A file's identity: any write, rename or replacement changes one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    pub fn of(path: &Path) -> Result<FileIdentity> {
        let m =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
        Ok(FileIdentity {
            len: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// One verified extension: the file DuckDB checked, and its identity then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    path: PathBuf,
    identity: FileIdentity,
}

/// The extensions a lake's engine verified, by the name they are loaded by.
#[derive(Debug)]
pub struct Verified {
    record: PathBuf,
    entries: BTreeMap<String, Entry>,
}

#[derive(Serialize, Deserialize)]
struct RecordFile {
    duckdb: String,
    extensions: BTreeMap<String, Entry>,
}

impl Verified {
    /// The record kept at `record`; an unreadable or missing one, or one of another DuckDB
    /// version, is empty (every extension is then verified again).
    pub fn read(record: &Path) -> Verified {
        let entries = std::fs::read_to_string(record)
            .ok()
            .and_then(|text| serde_json::from_str::<RecordFile>(&text).ok())
            .filter(|r| r.duckdb == crate::manifest::DUCKDB_VERSION)
            .map(|r| r.extensions)
            .unwrap_or_default();
        Verified {
            record: record.to_path_buf(),
            entries,
        }
    }

    /// The file verified for `name`, when it is still the file that was verified.
    pub fn current(&self, name: &str) -> Option<&Path> {
        let entry = self.entries.get(name)?;
        let now = FileIdentity::of(&entry.path).ok()?;
        (now == entry.identity).then_some(entry.path.as_path())
    }

    /// Verifies the file `installed` of the extension `name` (where the lake's DuckDB would
    /// load it from) with DuckDB's signature check, in a throwaway DuckDB; records it, and
    /// returns the file.
    pub fn verify(&mut self, name: &str, installed: &Path) -> Result<PathBuf> {
        // (the same file whatever the folder a run starts in)
        let path = std::fs::canonicalize(installed)
            .with_context(|| format!("cannot read {}", installed.display()))?;
        let conn = duckdb::Connection::open_in_memory()?;
        let before = FileIdentity::of(&path)?;
        conn.execute_batch(&format!("load {}", literal(&path.to_string_lossy())))
            .with_context(|| {
                format!(
                    "{} does not load with DuckDB's signature check",
                    path.display()
                )
            })?;
        if FileIdentity::of(&path)? != before {
            bail!("{} changed while its signature was checked", path.display());
        }
        self.entries.insert(
            name.to_string(),
            Entry {
                path: path.clone(),
                identity: before,
            },
        );
        self.save();
        Ok(path)
    }

    /// Writes the record (a new file renamed over the old). A record that cannot be written
    /// costs the next run a check, nothing else.
    fn save(&self) {
        let text = serde_json::to_string_pretty(&RecordFile {
            duckdb: crate::manifest::DUCKDB_VERSION.to_string(),
            extensions: self.entries.clone(),
        })
        .unwrap_or_default();
        let tmp = self.record.with_extension("json.tmp");
        let written = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &self.record));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            log::debug!(
                "cannot record the verified extensions in {}: {e}",
                self.record.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};

    use super::*;
    use crate::engine::{test_settings, Engine, Redactor};
    use crate::manifest::{EngineSettings, DUCKDB_VERSION};

    /// A copy of `just setup`'s httpfs extension in an extension folder of `dir`, and
    /// engine settings that look there.
    fn extension_copy(dir: &Path) -> (EngineSettings, PathBuf) {
        let platform = format!("v{DUCKDB_VERSION}/linux_amd64/httpfs.duckdb_extension");
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".tools/extensions")
            .join(&platform);
        let to = dir.join("extensions").join(&platform);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap();
        (test_settings(&dir.join("extensions")), to)
    }

    /// Changes the last byte of the file, which is part of its signature: DuckDB's check
    /// then fails, and a load without the check still succeeds.
    fn break_signature(file: &Path) {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(file)
            .unwrap();
        let mut last = [0u8];
        f.seek(SeekFrom::End(-1)).unwrap();
        f.read_exact(&mut last).unwrap();
        f.seek(SeekFrom::End(-1)).unwrap();
        f.write_all(&[last[0] ^ 0xff]).unwrap();
    }

    fn loaded(engine: &Engine, name: &str) -> bool {
        engine
            .query_i64(&format!(
                "select count(*) from duckdb_extensions() where extension_name = '{name}' and loaded"
            ))
            .unwrap()
            == 1
    }

    #[test]
    fn a_lake_verifies_an_extension_once_and_again_when_its_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, file) = extension_copy(dir.path());
        let lake = dir.path().join("lake.duckdb");
        let open = || Engine::open(&lake, &settings, Redactor::default()).unwrap();

        let engine = open();
        engine.load_extension("httpfs").unwrap();
        assert!(loaded(&engine, "httpfs"));
        drop(engine);
        let record = Verified::read(&dir.path().join("verified-extensions.json"));
        let canonical = std::fs::canonicalize(&file).unwrap();
        assert_eq!(record.current("httpfs"), Some(canonical.as_path()));

        // Rewritten since: checked again, and its broken signature keeps it out.
        break_signature(&file);
        let engine = open();
        let err = format!("{:#}", engine.load_extension("httpfs").unwrap_err());
        assert!(
            err.contains(&format!(
                "{} does not load with DuckDB's signature check",
                canonical.display()
            )),
            "{err}"
        );
        assert!(!loaded(&engine, "httpfs"));
        // ... and its record is not one of the file as it is now
        let record = Verified::read(&dir.path().join("verified-extensions.json"));
        assert_eq!(record.current("httpfs"), None);
    }

    #[test]
    fn without_the_extension_folder_duckdbs_own_is_verified_and_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let (_, file) = extension_copy(&home.join(".duckdb"));
        let settings = test_settings(&dir.path().join("no-such-folder"));
        let engine = Engine::open(
            &dir.path().join("lake.duckdb"),
            &settings,
            Redactor::default(),
        )
        .unwrap();
        // (DuckDB's home, `~`, as this test's)
        engine
            .execute(&format!("set home_directory = '{}'", home.display()))
            .unwrap();
        engine.load_extension("httpfs").unwrap();
        assert!(loaded(&engine, "httpfs"));
        let record = Verified::read(&dir.path().join("verified-extensions.json"));
        let canonical = std::fs::canonicalize(&file).unwrap();
        assert_eq!(record.current("httpfs"), Some(canonical.as_path()));
    }

    #[test]
    fn a_file_recorded_as_verified_is_loaded_without_its_check() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, file) = extension_copy(dir.path());
        break_signature(&file);
        // a record of the file as it is (what a first load writes): the check is not run
        let mut record = Verified::read(&dir.path().join("verified-extensions.json"));
        record.entries.insert(
            "httpfs".into(),
            Entry {
                path: std::fs::canonicalize(&file).unwrap(),
                identity: FileIdentity::of(&file).unwrap(),
            },
        );
        record.save();
        let engine = Engine::open(
            &dir.path().join("lake.duckdb"),
            &settings,
            Redactor::default(),
        )
        .unwrap();
        engine.load_extension("httpfs").unwrap();
        assert!(loaded(&engine, "httpfs"));

        // An engine without a lake checks every extension it loads.
        let engine = Engine::in_memory(&settings, Redactor::default()).unwrap();
        let err = format!("{:#}", engine.load_extension("httpfs").unwrap_err());
        assert!(err.contains("could not be loaded"), "{err}");
        assert!(!loaded(&engine, "httpfs"));
    }
}
