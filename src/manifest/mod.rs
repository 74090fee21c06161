//! The tenant manifest: a TOML file naming the tenant's sources and the steps of its
//! pipeline. Parsed in two stages: serde wire types that refuse unknown keys, then
//! [`compile`], which checks everything else (references, files, environment variables)
//! and reports every problem with its line and column before anything runs.

mod compile;
mod extends;
mod kinds;
mod problems;
mod vars;
mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::retry::RetryPolicy;

pub use problems::{ManifestError, Problem};
pub use vars::{interpolate, VarError};

use compile::compile;
use extends::{extends, merge};
use problems::deserialize_collecting;

/// The DuckDB version whose extensions the engine loads.
pub const DUCKDB_VERSION: &str = "1.4.4";

/// A checked manifest: everything a run needs, resolved.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    pub tenant: String,
    pub sql_dir: PathBuf,
    pub vocab_dir: PathBuf,
    pub lake_dir: PathBuf,
    /// Where each run writes the tenant's metrics file (`etl_<tenant>.prom`).
    pub metrics_dir: PathBuf,
    /// The group the published outputs are opened to (read-only); None: owner-only.
    pub outputs_group: Option<crate::privacy::Group>,
    pub engine: EngineSettings,
    pub sources: Vec<Source>,
    pub steps: Vec<Step>,
    pub retry: RetryPolicy,
    pub identity: Identity,
    /// The files the manifest was read from: itself, then the base it extends.
    pub files: Vec<PathBuf>,
    /// A manifest that extends a base: the tenant's file and text, the base's; problems
    /// found later point into them (see `Manifest::error`).
    pub(super) origins: Option<((PathBuf, String), (PathBuf, String))>,
    /// Keys whose secret is written in the manifest as text rather than `${VAR}`.
    pub literal_secrets: Vec<String>,
    /// The text the manifest was parsed from (with a base, the merged text), so that checks
    /// made later (a mapping against its source) can point at a line.
    pub text: String,
}

/// How conflicting provider records are settled (`[identity]`).
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// Source names, most trusted first: under one NPI, rows naming different people
    /// publish the whole record of the most trusted source's newest row.
    pub trust: Vec<String>,
    /// The tenant's steward decisions (a CSV); None: none.
    pub decisions: Option<PathBuf>,
}

/// Raw rows per transform batch unless the manifest says otherwise, per GB of
/// `memory_limit`: 10M + 10M rows ran in batches of 2M under a 1 GB limit.
pub const TRANSFORM_BATCH_ROWS_PER_GB: u64 = 2_000_000;

/// The batch size when the manifest names none: `TRANSFORM_BATCH_ROWS_PER_GB` for each GB
/// of a memory limit in bytes (KB, MB, GB, TB, or KiB, MiB, GiB, TiB), so a larger limit
/// computes a load in fewer batches; 2M rows for a limit DuckDB reads otherwise (a
/// percentage of the machine's memory).
pub fn default_transform_batch_rows(memory_limit: &str) -> u64 {
    let text = memory_limit.trim().to_ascii_lowercase().replace(' ', "");
    let digits = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let gb = match unit {
        "kb" | "kib" => 1e-6,
        "mb" | "mib" => 1e-3,
        "gb" | "gib" => 1.0,
        "tb" | "tib" => 1e3,
        _ => return TRANSFORM_BATCH_ROWS_PER_GB,
    };
    match number.parse::<f64>() {
        Ok(n) if n > 0.0 => ((n * gb * TRANSFORM_BATCH_ROWS_PER_GB as f64) as u64).max(100_000),
        _ => TRANSFORM_BATCH_ROWS_PER_GB,
    }
}

#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub memory_limit: String,
    pub threads: Option<u32>,
    pub extension_directory: PathBuf,
    /// How many finished runs' Parquet folders to keep besides the current one.
    pub keep_outputs: usize,
    /// Raw rows a transform takes per batch: what bounds its memory.
    pub transform_batch_rows: u64,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub kind: SourceKind,
    /// How the source's rows map to the staging contract, by entity (`[sources.X.map.E]`).
    pub maps: BTreeMap<String, crate::staging::EntityMap>,
}

#[derive(Debug, Clone)]
pub enum SourceKind {
    Postgres(PostgresSource),
    S3(S3Source),
    Folder(FolderSource),
}

/// What a file-based kind's rows are declared as: the raw table, the columns, the layouts.
pub struct FileShape<'a> {
    pub table: &'a str,
    pub columns: &'a [String],
    pub layouts: &'a [Layout],
}

/// What a database kind's rows are declared as: its tables and the key of each.
pub struct TableShape<'a> {
    pub tables: &'a [String],
    pub keys: &'a BTreeMap<String, String>,
}

impl SourceKind {
    /// A file-based kind's declared shape; None for a database.
    pub fn files(&self) -> Option<FileShape<'_>> {
        match self {
            SourceKind::S3(s) => Some(FileShape {
                table: &s.table,
                columns: &s.columns,
                layouts: &s.layouts,
            }),
            SourceKind::Folder(s) => Some(FileShape {
                table: &s.table,
                columns: &s.columns,
                layouts: &s.layouts,
            }),
            SourceKind::Postgres(_) => None,
        }
    }

    /// A database kind's tables and keys; None for a file-based kind.
    pub fn tables(&self) -> Option<TableShape<'_>> {
        match self {
            SourceKind::Postgres(pg) => Some(TableShape {
                tables: &pg.tables,
                keys: &pg.keys,
            }),
            SourceKind::S3(_) | SourceKind::Folder(_) => None,
        }
    }
}

/// A local or mounted folder that a partner drops files in (an on-premises share).
#[derive(Debug, Clone)]
pub struct FolderSource {
    /// Absolute, resolved against the manifest's folder.
    pub path: PathBuf,
    /// A file that grows between two looks this far apart is still being written: it is
    /// left for the next run.
    pub settle: std::time::Duration,
    pub table: String,
    pub columns: Vec<String>,
    pub on_bad_file: OnBadFile,
    /// The encoding of its CSV files; None: UTF-8, else Windows-1252, detected per file.
    pub encoding: Option<String>,
    /// The shapes of file this source receives (one, named after `table`, unless the
    /// manifest declares `layouts`).
    pub layouts: Vec<Layout>,
}

/// One shape of file a file source receives: its columns, the raw table its rows go to.
/// A file takes the layout whose columns its header matches best.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub name: String,
    pub table: String,
    pub columns: Vec<String>,
    /// Its CSV files' encoding, when it differs from the source's.
    pub encoding: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PostgresSource {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Secret,
    pub schema: String,
    pub tables: Vec<String>,
    /// Incremental reads by this timestamp column; None reads every table whole.
    pub cursor: Option<String>,
    /// The key column of each incremental table.
    pub keys: BTreeMap<String, String>,
    /// How far behind the watermark each read starts, for rows committed late.
    pub lookback: std::time::Duration,
    /// Tables read whole every run even with a cursor.
    pub snapshot: Vec<String>,
    /// Compare keys to find rows deleted in the source.
    pub detect_deletes: bool,
}

#[derive(Debug, Clone)]
pub struct S3Source {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub prefix: String,
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub use_ssl: bool,
    pub url_style: UrlStyle,
    pub table: String,
    pub columns: Vec<String>,
    pub on_bad_file: OnBadFile,
    /// See [`FolderSource::encoding`].
    pub encoding: Option<String>,
    /// See [`FolderSource::layouts`].
    pub layouts: Vec<Layout>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlStyle {
    Path,
    Vhost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBadFile {
    /// Record the file as rejected and go on with the others.
    Skip,
    /// Fail the run at the first bad file.
    Fail,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub action: StepAction,
}

#[derive(Debug, Clone)]
pub enum StepAction {
    /// Copy a source into the raw layer.
    Extract { source: String },
    /// Run the SQL macros, then these model files, in order.
    Transform { models: Vec<PathBuf> },
    /// Write these OMOP tables as Parquet.
    Publish { tables: Vec<String> },
}

/// A value that must never be printed: Debug and Display show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Manifest {
    /// Reads and checks a manifest, resolving `${VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        Self::load_with(path, |name| std::env::var(name).ok())
    }

    pub fn load_with(
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Manifest, ManifestError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| ManifestError {
                path: p.to_path_buf(),
                text: String::new(),
                files: Vec::new(),
                problems: vec![Problem::new(None, format!("cannot read the manifest: {e}"))],
            })
        };
        let text = read(path)?;
        match extends(path, &text)? {
            None => parse(path, &text, env).map(|mut m| {
                m.files = vec![path.to_path_buf()];
                m
            }),
            Some(base) => {
                // One level: the base's keys, overridden key by key by the tenant's. Errors
                // then point into the merged text (shown with each line as it reads).
                let merged = merge(&read(&base)?, &text).map_err(|message| ManifestError {
                    path: path.to_path_buf(),
                    text: String::new(),
                    files: Vec::new(),
                    problems: vec![Problem::new(None, message)],
                })?;
                let origins = (
                    (path.to_path_buf(), text.clone()),
                    (base.clone(), read(&base)?),
                );
                parse(path, &merged, env)
                    .map(|mut m| {
                        m.files = vec![path.to_path_buf(), base.clone()];
                        m.origins = Some(origins.clone());
                        m
                    })
                    .map_err(|mut e| {
                        e.path = PathBuf::from(format!(
                            "{} (extending {})",
                            path.display(),
                            base.display()
                        ));
                        e.relocate(&origins.0, &origins.1)
                    })
            }
        }
    }

    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// Every secret value, so that logs and errors can be scrubbed of them.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        for source in &self.sources {
            match &source.kind {
                SourceKind::Postgres(pg) => out.push(pg.password.expose().to_string()),
                SourceKind::S3(s3) => {
                    out.push(s3.access_key_id.expose().to_string());
                    out.push(s3.secret_access_key.expose().to_string());
                }
                SourceKind::Folder(_) => {}
            }
        }
        out.retain(|s| s.len() >= 3);
        out
    }

    pub fn database_path(&self) -> PathBuf {
        self.lake_dir.join("lake.duckdb")
    }

    pub fn outputs_dir(&self) -> PathBuf {
        self.lake_dir.join("omop")
    }

    /// Where runs keep their scratch files (what they fetched, the transform's batches):
    /// one folder per run, removed when the run ends, and by the next run should it not.
    pub fn staging_dir(&self) -> PathBuf {
        self.lake_dir.join("staging")
    }

    /// One run's scratch folder, within `staging_dir`.
    pub fn run_staging_dir(&self, run_id: &str) -> PathBuf {
        self.staging_dir().join(run_id)
    }
}

/// Parses manifest text. `path` names the file in errors and anchors relative paths.
pub fn parse(
    path: &Path,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Manifest, ManifestError> {
    let (wire, mut problems) = deserialize_collecting(text);
    let manifest = wire.and_then(|wire| compile(path, wire, &env, &mut problems));
    // In the order of the file; problems without a place last.
    problems.sort_by_key(|p| p.span.as_ref().map_or(usize::MAX, |s| s.start));
    match manifest {
        Some(mut m) if problems.is_empty() => {
            m.text = text.to_string();
            Ok(m)
        }
        _ => Err(ManifestError {
            path: path.to_path_buf(),
            text: text.to_string(),
            files: Vec::new(),
            problems,
        }),
    }
}

/// The candidate closest to `found`, if it is close enough to be a likely typo.
pub fn nearest<'a>(found: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(found, c), c))
        // Jaro-Winkler for words; one edit away for short names (`s4` for `s3`).
        .filter(|(score, c)| *score > 0.8 || strsim::levenshtein(found, c) <= 1)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Removes `.` and resolves `..` without touching the file system, so messages show
/// `lake/acme` rather than `pipelines/../lake/acme`.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                let last = out.components().next_back();
                match last {
                    Some(Component::Normal(_)) => {
                        out.pop();
                    }
                    Some(Component::RootDir) => {}
                    _ => out.push(".."),
                }
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

/// The OMOP tables a publish step may name: those the lake's DDL (`<sql>/ddl/*.sql`)
/// creates in the schema `omop` (`create table if not exists omop.NAME`), sorted, but for
/// etl's own history of each (`NAME_history`). A new OMOP table is its DDL and its model;
/// no list in the code names them.
pub fn omop_tables(sql_dir: &Path) -> Vec<String> {
    let mut tables = Vec::new();
    let files = std::fs::read_dir(sql_dir.join("ddl"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sql"));
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .to_lowercase();
        for part in text.split("create table if not exists omop.").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !name.ends_with("_history") && !tables.contains(&name) {
                tables.push(name);
            }
        }
    }
    tables.sort();
    tables
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests;
