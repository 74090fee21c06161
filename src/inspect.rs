//! `etl inspect`: the tenant's lake, read-only, with a short-named view for every table
//! (`provider`, `quarantine`, `flags`, `runs`, `raw_pg_provider`, …), in the DuckDB CLI or
//! for one query.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::engine::{ident, Engine, Redactor};
use crate::manifest::Manifest;

/// Aliases for the tables people look at most.
const ALIASES: &[(&str, &str, &str)] = &[
    ("flags", "staged", "dq_flags"),
    ("ledger", "etl", "file_ledger"),
    ("drift", "etl", "schema_drift"),
    ("row_status", "staged", "provider_row_status"),
    ("duplicates", "staged", "possible_duplicates"),
    ("decisions", "etl", "steward_decisions"),
];

/// Schemas in the order that wins a short name shared by two of them.
const SCHEMAS: &[&str] = &["omop", "etl", "staged", "raw", "vocab"];

/// `create temp view` statements for every table of the lake.
pub fn views(engine: &Engine) -> Result<String> {
    let tables = engine.query_strings(
        "select schema_name, table_name from duckdb_tables() \
         where database_name = current_database() order by schema_name, table_name",
    )?;
    let mut taken: Vec<String> = Vec::new();
    let mut sql = String::new();
    for schema in SCHEMAS {
        for row in tables.iter().filter(|r| r[0].as_deref() == Some(schema)) {
            let table = row[1].clone().unwrap_or_default();
            let name = if taken.contains(&table) || *schema == "raw" {
                format!("{schema}_{table}")
            } else {
                table.clone()
            };
            taken.push(name.clone());
            sql.push_str(&format!(
                "create or replace temp view {} as select * from {}.{};\n",
                ident(&name),
                ident(schema),
                ident(&table)
            ));
        }
    }
    for (alias, schema, table) in ALIASES {
        if tables
            .iter()
            .any(|r| r[0].as_deref() == Some(schema) && r[1].as_deref() == Some(table))
        {
            sql.push_str(&format!(
                "create or replace temp view {alias} as select * from {schema}.{table};\n"
            ));
        }
    }
    Ok(sql)
}

/// Runs one query against the lake and returns it as a text table.
pub fn query(manifest: &Manifest, sql: &str) -> Result<String> {
    let engine = open(manifest)?;
    engine.execute(&views(&engine)?)?;
    let (headers, rows) = engine.query_table(sql)?;
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    Ok(crate::cli::table(&headers, &rows))
}

/// The tenant's lake, read-only; an error when it has none yet.
pub fn open(manifest: &Manifest) -> Result<Engine> {
    let db = manifest.database_path();
    if !db.exists() {
        bail!(
            "tenant `{}` has no lake yet ({}): run it first",
            manifest.tenant,
            db.display()
        );
    }
    Engine::open_read_only(&db, &manifest.engine, Redactor::new(manifest.secrets()))
}

/// Opens the DuckDB CLI on the lake, read-only, with the views.
pub fn interactive(manifest: &Manifest) -> Result<()> {
    let views = {
        let engine = open(manifest)?;
        views(&engine)?
    };
    let cli = duckdb_cli(manifest);
    let status = std::process::Command::new(&cli)
        .arg("-readonly")
        .arg(manifest.database_path())
        .arg("-cmd")
        .arg(format!(
            "{views}select 'views: provider, care_site, quarantine, flags, runs, reconciliation, ledger, raw_*, … (.tables lists them)' as \"lake of tenant {}\";",
            manifest.tenant
        ))
        .status()
        .with_context(|| {
            format!(
                "cannot start the DuckDB CLI {}: run `just setup`, or set ETL_DUCKDB_CLI",
                cli.display()
            )
        })?;
    if !status.success() {
        bail!("the DuckDB CLI exited with {status}");
    }
    Ok(())
}

/// ETL_DUCKDB_CLI, else the project's `.tools/bin/duckdb`, else `duckdb` on the PATH.
fn duckdb_cli(manifest: &Manifest) -> PathBuf {
    if let Some(path) = std::env::var_os("ETL_DUCKDB_CLI") {
        return PathBuf::from(path);
    }
    let project = manifest
        .sql_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let local = project.join(".tools/bin/duckdb");
    if local.is_file() {
        local
    } else {
        PathBuf::from("duckdb")
    }
}
