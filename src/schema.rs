//! The lake's schema version and its migrations.
//!
//! `sql/ddl/etl.sql` creates the newest schema in a new lake. A lake records the version
//! it has in `etl.schema_version`; each numbered file `sql/migrations/NNN_what.sql` brings
//! a lake from version NNN-1 to NNN. Opening a lake older than the newest migration applies
//! the missing ones and the DDL in one transaction (all or nothing); a lake newer than this
//! etl knows is refused, untouched. A lake made before versions were recorded is version 1.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::engine::{literal, Engine};

/// A lake written by a newer etl than this one: refused before anything is written.
#[derive(Debug)]
pub struct LakeTooNew {
    pub lake: u32,
    pub known: u32,
}

impl std::fmt::Display for LakeTooNew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the lake has schema version {}, newer than the {} this etl knows: it was written \
             by a newer release; run that release (or newer) on it. Nothing was changed.",
            self.lake, self.known
        )
    }
}

impl std::error::Error for LakeTooNew {}

/// The migrations in `<sql>/migrations`, by number, sorted.
pub fn migrations(sql_dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let dir = sql_dir.join("migrations");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(found);
    };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !name.ends_with(".sql") {
            continue;
        }
        let number: u32 = name
            .split('_')
            .next()
            .and_then(|n| n.parse().ok())
            .with_context(|| {
                format!(
                    "migration {} must be named NNN_what.sql (NNN: its version)",
                    path.display()
                )
            })?;
        found.push((number, path));
    }
    found.sort();
    Ok(found)
}

/// The newest schema version the SQL folder describes.
pub fn newest(sql_dir: &Path) -> Result<u32> {
    Ok(migrations(sql_dir)?.last().map_or(1, |(n, _)| *n))
}

/// The lake's version: None for a new (empty) lake.
fn current(engine: &Engine) -> Result<Option<u32>> {
    let table = |schema: &str, name: &str| -> Result<bool> {
        Ok(engine.query_i64(&format!(
            "select count(*) from duckdb_tables() where schema_name = {} and table_name = {}",
            literal(schema),
            literal(name)
        ))? > 0)
    };
    if table("etl", "schema_version")? {
        return Ok(Some(
            engine.query_i64("select max(version) from etl.schema_version")? as u32,
        ));
    }
    // made before versions were recorded
    Ok(table("etl", "runs")?.then_some(1))
}

/// Brings the lake to the newest schema: creates it in a new lake, migrates an older one
/// in one transaction, refuses a newer one. Returns the versions migrated from and to.
pub fn prepare(engine: &Engine, sql_dir: &Path) -> Result<(Option<u32>, u32)> {
    let newest = newest(sql_dir)?;
    let ddl = sql_dir.join("ddl").join("etl.sql");
    let version = current(engine)?;
    match version {
        Some(v) if v > newest => Err(LakeTooNew {
            lake: v,
            known: newest,
        }
        .into()),
        Some(v) if v == newest => {
            // new tables of the same version (`create … if not exists`) are still created
            engine.execute_file(&ddl)?;
            Ok((version, newest))
        }
        _ => {
            engine.execute("begin transaction")?;
            let migrated = (|| -> Result<()> {
                if let Some(v) = version {
                    for (n, file) in migrations(sql_dir)?.into_iter().filter(|(n, _)| *n > v) {
                        log::info!("lake schema: migrating to version {n} ({})", file.display());
                        engine.execute_file(&file)?;
                    }
                }
                engine.execute_file(&ddl)?;
                engine.execute(&format!(
                    "create table if not exists etl.schema_version (
                         version integer not null, migrated_at timestamptz not null);
                     insert into etl.schema_version values ({newest}, now());"
                ))?;
                Ok(())
            })();
            match migrated {
                Ok(()) => engine.execute("commit")?,
                Err(e) => {
                    let _ = engine.execute("rollback");
                    return Err(e.context(
                        "the lake's schema could not be brought up to date; it is unchanged",
                    ));
                }
            }
            Ok((version, newest))
        }
    }
}
