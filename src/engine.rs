//! The embedded DuckDB engine: one database file per tenant holding the raw, staged and
//! OMOP layers and the pipeline's state. Every error leaving here has secrets scrubbed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use duckdb::Connection;

use crate::extensions::Verified;
use crate::manifest::{EngineSettings, DUCKDB_VERSION};

/// Replaces every known secret in a text with `***`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(mut secrets: Vec<String>) -> Self {
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if !secret.is_empty() {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }
}

/// Query results as text cells, NULL as None.
pub type Rows = Vec<Vec<Option<String>>>;

pub struct Engine {
    conn: Connection,
    redactor: Redactor,
    /// For a lake's engine, the extensions it may load without DuckDB's signature check;
    /// None for the others, which check every extension they load, automatically or not.
    verified: Option<Arc<Mutex<Verified>>>,
    /// Where extensions are looked for ([`extension_directory`]).
    extension_dir: PathBuf,
}

/// Quotes a string as a SQL literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Quotes a name as a SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl Engine {
    /// Opens (creating if needed) the tenant database and applies the engine settings.
    pub fn open(path: &Path, settings: &EngineSettings, redactor: Redactor) -> Result<Engine> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        // DuckDB's own signature check is off: every extension is loaded by
        // `load_extension`, from a file verified once (see `crate::extensions`).
        let config = duckdb::Config::default()
            .allow_unsigned_extensions()
            .map_err(|e| anyhow!("{e}"))?;
        let conn = Connection::open_with_flags(path, config)
            .map_err(|e| anyhow!("{}", redactor.redact(&e.to_string())))
            .with_context(|| format!("cannot open the tenant database {}", path.display()))?;
        let verified = Verified::read(&path.with_file_name("verified-extensions.json"));
        let engine = Engine {
            conn,
            redactor,
            verified: Some(Arc::new(Mutex::new(verified))),
            extension_dir: extension_directory(settings),
        };
        engine.configure(settings, path)?;
        Ok(engine)
    }

    /// Opens the tenant database read-only, for inspection while no run writes it.
    pub fn open_read_only(
        path: &Path,
        settings: &EngineSettings,
        redactor: Redactor,
    ) -> Result<Engine> {
        let config = duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .map_err(|e| anyhow!("{e}"))?;
        let conn = Connection::open_with_flags(path, config)
            .map_err(|e| anyhow!("{}", redactor.redact(&e.to_string())))
            .with_context(|| {
                format!(
                    "cannot open {} read-only (is a run writing it?)",
                    path.display()
                )
            })?;
        let engine = Engine {
            conn,
            redactor,
            verified: None,
            extension_dir: extension_directory(settings),
        };
        engine.configure(settings, path)?;
        Ok(engine)
    }

    /// A second connection to the same database, which sees what this one attached and
    /// loaded, to run a query beside this one's.
    pub fn try_clone(&self) -> Result<Engine> {
        Ok(Engine {
            conn: self
                .conn
                .try_clone()
                .map_err(|e| anyhow!("{}", self.redactor.redact(&e.to_string())))?,
            redactor: self.redactor.clone(),
            verified: self.verified.clone(),
            extension_dir: self.extension_dir.clone(),
        })
    }

    /// Every row of a query as text cells, with the column names.
    pub fn query_table(&self, sql: &str) -> Result<(Vec<String>, Vec<Vec<String>>)> {
        let (names, rows) = self.query_with_names(sql)?;
        let rows = rows
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|c| c.unwrap_or_else(|| "NULL".into()))
                    .collect()
            })
            .collect();
        Ok((names, rows))
    }

    /// An in-memory engine, for checks that need no database file.
    pub fn in_memory(settings: &EngineSettings, redactor: Redactor) -> Result<Engine> {
        let conn = Connection::open_in_memory()?;
        let engine = Engine {
            conn,
            redactor,
            verified: None,
            extension_dir: extension_directory(settings),
        };
        engine.configure(settings, Path::new("."))?;
        Ok(engine)
    }

    fn configure(&self, settings: &EngineSettings, db_path: &Path) -> Result<()> {
        let temp_dir = db_path
            .parent()
            .map(|p| p.join("tmp"))
            .unwrap_or_else(|| PathBuf::from("tmp"));
        let mut sql = format!(
            "set memory_limit = {}; set temp_directory = {}; \
             set autoinstall_known_extensions = false; set autoload_known_extensions = {};",
            literal(&settings.memory_limit),
            literal(&temp_dir.to_string_lossy()),
            self.verified.is_none(),
        );
        if let Some(threads) = settings.threads {
            sql.push_str(&format!(" set threads = {threads};"));
        }
        // DuckDB's allocator keeps memory it freed for reuse, outside `memory_limit`: by
        // default up to 128 MiB, and 512 MiB after a large free. Kept to 16 MiB, a full
        // recompute of 10M + 10M rows under a 1 GB limit peaked at 1.30 GB instead of
        // 1.57 GB, and took 5% longer (290 s against 277 s, back to back).
        sql.push_str(
            " set allocator_flush_threshold = '16MB';\
             set allocator_bulk_deallocation_flush_threshold = '16MB';",
        );
        sql.push_str(&set_extension_directory(&self.extension_dir));
        self.execute(&sql)
            .context("cannot apply the engine settings ([engine] in the manifest)")
    }

    /// Loads a DuckDB extension, saying how to get it when it is missing.
    pub fn load_extension(&self, name: &str) -> Result<()> {
        let loaded = match &self.verified {
            None => self.execute(&format!("load {name}")),
            Some(verified) => {
                let mut verified = verified.lock().unwrap_or_else(|e| e.into_inner());
                let file = match verified.current(name) {
                    Some(file) => Ok(file.to_path_buf()),
                    None => self
                        .installed_extension(name)
                        .and_then(|installed| verified.verify(name, &installed)),
                };
                file.and_then(|f| self.execute(&format!("load {}", literal(&f.to_string_lossy()))))
            }
        };
        loaded.map_err(|e| {
            anyhow!(
                "DuckDB extension `{name}` (v{DUCKDB_VERSION}) could not be loaded from {}: {e:#}\n\
                 help: run `just setup`, which puts it there, or set ETL_EXTENSION_DIR to a folder \
                 holding v{DUCKDB_VERSION}/linux_amd64/{name}*.duckdb_extension; with internet \
                 access, `INSTALL {name}` in DuckDB {DUCKDB_VERSION} works too",
                self.extension_dir.display()
            )
        })
    }

    /// The file DuckDB would load the extension `name` from.
    fn installed_extension(&self, name: &str) -> Result<PathBuf> {
        let path: Option<String> = self
            .conn
            .query_row(
                "select install_path from duckdb_extensions() \
                 where (extension_name = $1 or list_contains(aliases, $1)) and installed",
                [name],
                |row| row.get(0),
            )
            .ok();
        path.map(PathBuf::from).context("it is not there")
    }

    pub fn execute(&self, sql: &str) -> Result<()> {
        self.conn
            .execute_batch(sql)
            .map_err(|e| anyhow!("{}", self.redactor.redact(&e.to_string())))
    }

    /// Runs a SQL file; errors name the file.
    pub fn execute_file(&self, path: &Path) -> Result<()> {
        let sql = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read SQL file {}", path.display()))?;
        self.execute(&sql)
            .with_context(|| format!("SQL file {} failed", path.display()))
    }

    pub fn query_i64(&self, sql: &str) -> Result<i64> {
        self.conn
            .query_row(sql, [], |row| row.get::<_, i64>(0))
            .map_err(|e| anyhow!("{}", self.redactor.redact(&e.to_string())))
    }

    /// Every row of a query as text cells (NULL as None), for reports and checks.
    pub fn query_strings(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        Ok(self.query_with_names(sql)?.1)
    }

    /// Column names, and every row as text cells (NULL as None).
    fn query_with_names(&self, sql: &str) -> Result<(Vec<String>, Rows)> {
        let run = || -> duckdb::Result<(Vec<String>, Rows)> {
            let mut stmt = self.conn.prepare(sql)?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let n = row.as_ref().column_count();
                let mut cells = Vec::with_capacity(n);
                for i in 0..n {
                    let value: duckdb::types::Value = row.get(i)?;
                    cells.push(value_to_string(value));
                }
                out.push(cells);
            }
            drop(rows);
            Ok((stmt.column_names(), out))
        };
        run().map_err(|e| anyhow!("{}", self.redactor.redact(&e.to_string())))
    }

    /// The column names a query returns.
    pub fn columns_of(&self, sql: &str) -> Result<Vec<(String, String)>> {
        let rows = self.query_strings(&format!("describe {sql}"))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r[0].clone().unwrap_or_default(),
                    r[1].clone().unwrap_or_default(),
                )
            })
            .collect())
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }
}

fn value_to_string(value: duckdb::types::Value) -> Option<String> {
    use duckdb::types::Value as V;
    Some(match value {
        V::Null => return None,
        V::Boolean(b) => b.to_string(),
        V::TinyInt(v) => v.to_string(),
        V::SmallInt(v) => v.to_string(),
        V::Int(v) => v.to_string(),
        V::BigInt(v) => v.to_string(),
        V::HugeInt(v) => v.to_string(),
        V::UTinyInt(v) => v.to_string(),
        V::USmallInt(v) => v.to_string(),
        V::UInt(v) => v.to_string(),
        V::UBigInt(v) => v.to_string(),
        V::Float(v) => v.to_string(),
        V::Double(v) => v.to_string(),
        V::Decimal(d) => d.to_string(),
        V::Text(s) => s,
        other => format!("{other:?}"),
    })
}

/// The statement that has DuckDB look for extensions in `dir`, when it is a folder; none
/// otherwise (DuckDB then looks in its own, `~/.duckdb/extensions`, where `INSTALL` puts
/// them).
pub fn set_extension_directory(dir: &Path) -> String {
    if dir.is_dir() {
        format!(
            " set extension_directory = {};",
            literal(&dir.to_string_lossy())
        )
    } else {
        String::new()
    }
}

/// Where extensions are looked for: ETL_EXTENSION_DIR, else the manifest's setting.
pub fn extension_directory(settings: &EngineSettings) -> PathBuf {
    std::env::var_os("ETL_EXTENSION_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| settings.extension_directory.clone())
}

/// A lake file `lake.duckdb` in `dir` with small settings, for unit tests that need a
/// database on disk (compression, checkpoints).
#[cfg(test)]
pub fn test_lake(dir: &Path) -> Engine {
    Engine::open(
        &dir.join("lake.duckdb"),
        &test_settings(dir),
        Redactor::new(vec![]),
    )
    .unwrap()
}

/// Small engine settings for unit tests, extensions looked for in `dir`.
#[cfg(test)]
pub fn test_settings(dir: &Path) -> EngineSettings {
    EngineSettings {
        memory_limit: "1GB".into(),
        threads: Some(1),
        extension_directory: dir.into(),
        keep_outputs: 1,
        transform_batch_rows: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_every_secret_longest_first() {
        let r = Redactor::new(vec!["abc".into(), "abcdef".into()]);
        assert_eq!(r.redact("key=abcdef other=abc"), "key=*** other=***");
    }

    #[test]
    fn quotes_literals_and_identifiers() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
