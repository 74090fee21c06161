//! The tenant manifest: a TOML file naming the tenant's sources and the steps of its
//! pipeline. Parsed in two stages: serde wire types that refuse unknown keys, then
//! [`compile`], which checks everything else (references, files, environment variables)
//! and reports every problem with its line and column before anything runs.

mod vars;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::retry::RetryPolicy;

pub use vars::{interpolate, VarError};

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
    /// The group the published outputs are opened to (read-only); None: owner-only.
    pub outputs_group: Option<crate::privacy::Group>,
    pub engine: EngineSettings,
    pub sources: Vec<Source>,
    pub steps: Vec<Step>,
    pub retry: RetryPolicy,
    /// The files the manifest was read from: itself, then the base it extends.
    pub files: Vec<PathBuf>,
    /// Keys whose secret is written in the manifest as text rather than `${VAR}`.
    pub literal_secrets: Vec<String>,
    /// The text the manifest was parsed from (with a base, the merged text), so that checks
    /// made later (a mapping against its source) can point at a line.
    pub text: String,
}

/// Raw rows per transform batch unless the manifest says otherwise: a batch of 2M rows
/// ran within the default 2 GB memory limit (1.5 GB resident).
pub const DEFAULT_TRANSFORM_BATCH_ROWS: u64 = 2_000_000;

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
                    problems: vec![Problem::new(None, message)],
                })?;
                parse(path, &merged, env)
                    .map(|mut m| {
                        m.files = vec![path.to_path_buf(), base.clone()];
                        m
                    })
                    .map_err(|mut e| {
                        e.path = PathBuf::from(format!(
                            "{} (extending {})",
                            path.display(),
                            base.display()
                        ));
                        e
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
}

/// The base a manifest extends (`extends = "_base.toml"`, relative to the manifest).
fn extends(path: &Path, text: &str) -> Result<Option<PathBuf>, ManifestError> {
    let Ok(doc) = text.parse::<toml_edit::DocumentMut>() else {
        return Ok(None); // the syntax error is reported by parse, with its place
    };
    let Some(item) = doc.get("extends") else {
        return Ok(None);
    };
    match item.as_str() {
        Some(base) => Ok(Some(normalize(
            &path.parent().unwrap_or(Path::new(".")).join(base),
        ))),
        None => Err(ManifestError {
            path: path.to_path_buf(),
            text: text.to_string(),
            problems: vec![Problem::new(
                item.span(),
                "`extends` must be a file name, such as \"_base.toml\"",
            )],
        }),
    }
}

/// The base with the tenant's keys laid over it: tables merge key by key, anything else
/// (values, arrays, the list of steps) is replaced whole.
fn merge(base: &str, tenant: &str) -> Result<String, String> {
    let mut base: toml_edit::DocumentMut = base
        .parse()
        .map_err(|e| format!("the base manifest does not parse: {e}"))?;
    let tenant: toml_edit::DocumentMut = tenant.parse().map_err(|e| format!("{e}"))?;
    if base.contains_key("extends") {
        return Err("a base manifest cannot extend another (one level only)".into());
    }
    fn lay(into: &mut toml_edit::Table, from: &toml_edit::Table) {
        for (key, item) in from.iter() {
            if key == "extends" {
                continue;
            }
            match (into.get_mut(key), item) {
                (Some(toml_edit::Item::Table(a)), toml_edit::Item::Table(b)) => lay(a, b),
                _ => {
                    into.insert(key, item.clone());
                }
            }
        }
    }
    lay(base.as_table_mut(), tenant.as_table());
    Ok(base.to_string())
}

/// Everything wrong with one manifest.
#[derive(Debug)]
pub struct ManifestError {
    pub path: PathBuf,
    text: String,
    pub problems: Vec<Problem>,
}

impl Manifest {
    /// An error that points into this manifest's text, for problems found after parsing.
    pub fn error(&self, problems: Vec<Problem>) -> ManifestError {
        ManifestError {
            path: self.path.clone(),
            text: self.text.clone(),
            problems,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub span: Option<Range<usize>>,
    pub message: String,
    pub help: Option<String>,
}

impl Problem {
    pub fn new(span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        Problem {
            span,
            message: message.into(),
            help: None,
        }
    }
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl ManifestError {
    /// 1-based line and column of a byte offset in the manifest.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(&self.text, offset)
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{} has {} problem{}:",
            self.path.display(),
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            writeln!(f)?;
            writeln!(f, "error: {}", problem.message)?;
            if let Some(span) = &problem.span {
                let (line, col) = self.line_col(span.start);
                let line_text = self.text.lines().nth(line - 1).unwrap_or("");
                let width = self.text[span.clone()]
                    .lines()
                    .next()
                    .map_or(1, |s| s.chars().count().max(1));
                let gutter = line.to_string().len();
                writeln!(f, "{:gutter$}--> {}:{line}:{col}", "", self.path.display())?;
                writeln!(f, "{:gutter$} |", "")?;
                writeln!(f, "{line} | {line_text}")?;
                writeln!(
                    f,
                    "{:gutter$} | {}{}",
                    "",
                    " ".repeat(col - 1),
                    "^".repeat(width)
                )?;
            } else {
                writeln!(f, " --> {}", self.path.display())?;
            }
            if let Some(help) = &problem.help {
                writeln!(f, "help: {help}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ManifestError {}

// ---------------------------------------------------------------------------------------
// Wire types: the manifest as written. Every struct refuses keys it does not know.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestWire {
    tenant: Spanned<String>,
    #[serde(default)]
    paths: PathsWire,
    #[serde(default)]
    engine: EngineWire,
    #[serde(default)]
    sources: BTreeMap<String, Spanned<SourceWire>>,
    #[serde(default)]
    steps: Vec<Spanned<StepWire>>,
    #[serde(default)]
    retry: RetryWire,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetryWire {
    attempts: Option<Spanned<u32>>,
    initial_delay_seconds: Option<Spanned<f64>>,
    max_delay_seconds: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PathsWire {
    sql: Option<Spanned<String>>,
    vocab: Option<Spanned<String>>,
    lake: Option<Spanned<String>>,
    outputs_group: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EngineWire {
    memory_limit: Option<Spanned<String>>,
    threads: Option<Spanned<u32>>,
    extension_directory: Option<Spanned<String>>,
    keep_outputs: Option<Spanned<u32>>,
    transform_batch_rows: Option<Spanned<u64>>,
}

/// One struct for every source kind: `compile` checks which keys a kind allows, so an
/// error can say "`bucket` does not apply to a postgres source" with its position.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceWire {
    kind: Spanned<String>,
    // postgres
    host: Option<Spanned<String>>,
    port: Option<Spanned<String>>,
    database: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    schema: Option<Spanned<String>>,
    tables: Option<Spanned<Vec<Spanned<String>>>>,
    cursor: Option<Spanned<String>>,
    keys: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    lookback_seconds: Option<Spanned<u64>>,
    snapshot: Option<Spanned<Vec<Spanned<String>>>>,
    detect_deletes: Option<Spanned<bool>>,
    // s3
    endpoint: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    bucket: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    access_key_id: Option<Spanned<String>>,
    secret_access_key: Option<Spanned<String>>,
    use_ssl: Option<Spanned<bool>>,
    url_style: Option<Spanned<String>>,
    table: Option<Spanned<String>>,
    columns: Option<Spanned<Vec<Spanned<String>>>>,
    on_bad_file: Option<Spanned<String>>,
    // folder
    path: Option<Spanned<String>>,
    settle_seconds: Option<Spanned<f64>>,
    // every kind: entity -> contract field (or `table`) -> column or expression
    map: Option<Spanned<BTreeMap<String, Spanned<MapWire>>>>,
}

/// One entity's mapping as written: contract field (or `table`) -> column or expression.
type MapWire = BTreeMap<String, Spanned<String>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepWire {
    name: Spanned<String>,
    extract: Option<Spanned<String>>,
    sql: Option<Spanned<Vec<Spanned<String>>>>,
    publish: Option<Spanned<Vec<Spanned<String>>>>,
}

/// The OMOP tables the project's SQL builds and a publish step may name.
pub const OMOP_TABLES: &[&str] = &["care_site", "provider"];

// ---------------------------------------------------------------------------------------

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
            problems,
        }),
    }
}

/// Deserializes, and on an error blanks the offending line and tries again, so one
/// report lists every unknown key and wrong type rather than only the first.
/// Blanking keeps byte offsets, so every span still points into the original text.
fn deserialize_collecting(text: &str) -> (Option<ManifestWire>, Vec<Problem>) {
    let mut work = text.to_string();
    let mut problems: Vec<Problem> = Vec::new();
    for _ in 0..64 {
        let err = match toml::from_str::<ManifestWire>(&work) {
            Ok(wire) => {
                // A wire value from blanked text is only good for finding more problems.
                return (problems.is_empty().then_some(wire), problems);
            }
            Err(err) => err,
        };
        let problem = problem_from_toml(&err);
        let Some(span) = err.span() else {
            problems.push(problem);
            break;
        };
        // Blank whole lines, never a table header: that would move its keys elsewhere.
        let start = work[..span.start].rfind('\n').map_or(0, |i| i + 1);
        let end = work[span.end..]
            .find('\n')
            .map_or(work.len(), |i| span.end + i);
        let region = &work[start..end];
        let blankable =
            span.end > span.start && !region.lines().any(|l| l.trim_start().starts_with('['));
        if !problems.contains(&problem) {
            problems.push(problem);
        }
        if !blankable {
            break;
        }
        let blanked: String = region
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        // Same byte length only for ASCII; fall back to stopping otherwise.
        if blanked.len() != region.len() {
            break;
        }
        work.replace_range(start..end, &blanked);
    }
    (None, problems)
}

fn problem_from_toml(err: &toml::de::Error) -> Problem {
    let message = err.message().trim().to_string();
    let mut problem = Problem::new(err.span(), message.clone());
    // "unknown field `hots`, expected one of `host`, …": suggest the near name.
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((found, expected)) = rest.split_once('`') {
            let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            if let Some(near) = nearest(found, candidates.iter().copied()) {
                problem = problem.help(format!("did you mean `{near}`?"));
            }
        }
    }
    problem
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

fn compile(
    path: &Path,
    wire: ManifestWire,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Option<Manifest> {
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };

    let tenant = wire.tenant.get_ref().clone();
    if tenant.is_empty()
        || !tenant
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        problems.push(Problem::new(
            Some(wire.tenant.span()),
            format!("tenant {tenant:?} is not a valid tenant name: expected lower-case letters, digits, `_` or `-`"),
        ));
    }

    let resolve =
        |value: &Spanned<String>, key: &str, problems: &mut Vec<Problem>| -> Option<String> {
            match interpolate(value.get_ref(), env) {
                Ok(v) => Some(v),
                Err(VarError::Unset(name)) => {
                    problems.push(
                        Problem::new(
                            Some(value.span()),
                            format!("environment variable `{name}` is not set (needed by `{key}`)"),
                        )
                        .help(format!(
                            "export {name}=…, or write `${{{name}:-default}}` for a default"
                        )),
                    );
                    None
                }
                Err(VarError::Syntax(msg)) => {
                    problems.push(Problem::new(Some(value.span()), format!("`{key}`: {msg}")));
                    None
                }
            }
        };

    // Paths, relative to the manifest's folder.
    let dir = |value: &Option<Spanned<String>>,
               default: &str,
               key: &str,
               must_exist: bool,
               problems: &mut Vec<Problem>|
     -> PathBuf {
        let (raw, span) = match value {
            Some(v) => (
                resolve(v, key, problems).unwrap_or_default(),
                Some(v.span()),
            ),
            None => (default.to_string(), None),
        };
        let p = normalize(&base.join(&raw));
        if must_exist && !p.is_dir() {
            problems.push(Problem::new(
                span,
                format!("`{key}`: folder {} does not exist", p.display()),
            ));
        }
        p
    };
    let sql_dir = dir(&wire.paths.sql, "../sql", "paths.sql", true, problems);
    let vocab_dir = dir(&wire.paths.vocab, "../vocab", "paths.vocab", true, problems);
    let lake_dir = dir(
        &wire.paths.lake,
        &format!("../lake/{tenant}"),
        "paths.lake",
        false,
        problems,
    );

    let engine = EngineSettings {
        memory_limit: wire
            .engine
            .memory_limit
            .as_ref()
            .and_then(|v| resolve(v, "engine.memory_limit", problems))
            .unwrap_or_else(|| "2GB".to_string()),
        threads: wire.engine.threads.as_ref().map(|t| *t.get_ref()),
        extension_directory: match &wire.engine.extension_directory {
            Some(v) => normalize(
                &base.join(resolve(v, "engine.extension_directory", problems).unwrap_or_default()),
            ),
            None => normalize(&base.join("../.tools/extensions")),
        },
        keep_outputs: wire
            .engine
            .keep_outputs
            .as_ref()
            .map_or(7, |k| *k.get_ref() as usize),
        transform_batch_rows: match &wire.engine.transform_batch_rows {
            Some(rows) if *rows.get_ref() == 0 => {
                problems.push(Problem::new(
                    Some(rows.span()),
                    "`engine.transform_batch_rows` must be at least 1",
                ));
                DEFAULT_TRANSFORM_BATCH_ROWS
            }
            Some(rows) => *rows.get_ref(),
            None => DEFAULT_TRANSFORM_BATCH_ROWS,
        },
    };

    let mut sources = Vec::new();
    for (name, source) in &wire.sources {
        if let Some(mut s) = compile_source(name, source, &resolve, problems) {
            if let SourceKind::Folder(folder) = &mut s.kind {
                folder.path = normalize(&base.join(&folder.path));
            }
            s.maps = compile_maps(&s, source.get_ref(), &base, problems);
            sources.push(s);
        }
    }
    let source_names: Vec<&str> = wire.sources.keys().map(String::as_str).collect();

    if wire.steps.is_empty() {
        problems.push(Problem::new(
            None,
            "no steps: add at least one [[steps]] table",
        ));
    }
    let mut steps = Vec::new();
    let mut seen = BTreeSet::new();
    for step in &wire.steps {
        let span = step.span();
        let step = step.get_ref();
        let name = step.name.get_ref().clone();
        if !seen.insert(name.clone()) {
            problems.push(Problem::new(
                Some(step.name.span()),
                format!("step name `{name}` is used twice: step names must be unique"),
            ));
        }
        let given = [
            step.extract.is_some(),
            step.sql.is_some(),
            step.publish.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            problems.push(Problem::new(
                Some(span),
                format!("step `{name}` must have exactly one of `extract`, `sql` or `publish` (found {given})"),
            ));
            continue;
        }
        let action = if let Some(source) = &step.extract {
            let s = source.get_ref();
            if !source_names.contains(&s.as_str()) {
                let mut p = Problem::new(
                    Some(source.span()),
                    format!(
                        "step `{name}` extracts from unknown source `{s}`: the manifest defines {}",
                        list_or_none(&source_names)
                    ),
                );
                if let Some(near) = nearest(s, source_names.iter().copied()) {
                    p = p.help(format!("did you mean `{near}`?"));
                }
                problems.push(p);
            }
            StepAction::Extract { source: s.clone() }
        } else if let Some(files) = &step.sql {
            let mut models = Vec::new();
            if files.get_ref().is_empty() {
                problems.push(Problem::new(
                    Some(files.span()),
                    format!("step `{name}`: `sql` lists no file"),
                ));
            }
            for file in files.get_ref() {
                let p = normalize(&sql_dir.join("models").join(file.get_ref()));
                if !p.is_file() {
                    problems.push(Problem::new(
                        Some(file.span()),
                        format!("step `{name}`: SQL file {} does not exist", p.display()),
                    ));
                }
                models.push(p);
            }
            StepAction::Transform { models }
        } else if let Some(tables) = &step.publish {
            let mut out = Vec::new();
            for table in tables.get_ref() {
                let t = table.get_ref();
                if !OMOP_TABLES.contains(&t.as_str()) {
                    let mut p = Problem::new(
                        Some(table.span()),
                        format!(
                            "step `{name}` publishes unknown table `{t}`: expected one of {}",
                            list_or_none(OMOP_TABLES)
                        ),
                    );
                    if let Some(near) = nearest(t, OMOP_TABLES.iter().copied()) {
                        p = p.help(format!("did you mean `{near}`?"));
                    }
                    problems.push(p);
                }
                out.push(t.clone());
            }
            StepAction::Publish { tables: out }
        } else {
            unreachable!("exactly one action was checked above")
        };
        steps.push(Step { name, action });
    }

    let defaults = RetryPolicy::default();
    let seconds = |v: &Option<Spanned<f64>>,
                   default: std::time::Duration,
                   key: &str,
                   problems: &mut Vec<Problem>| match v {
        None => default,
        Some(v) if v.get_ref().is_finite() && *v.get_ref() >= 0.0 && *v.get_ref() <= 86_400.0 => {
            std::time::Duration::from_secs_f64(*v.get_ref())
        }
        Some(v) => {
            problems.push(Problem::new(
                Some(v.span()),
                format!("`{key}` must be between 0 and 86400 seconds"),
            ));
            default
        }
    };
    let retry = RetryPolicy {
        attempts: match &wire.retry.attempts {
            None => defaults.attempts,
            Some(a) if *a.get_ref() >= 1 => *a.get_ref(),
            Some(a) => {
                problems.push(Problem::new(
                    Some(a.span()),
                    "`retry.attempts` counts the first attempt: 1 or more",
                ));
                1
            }
        },
        initial_delay: seconds(
            &wire.retry.initial_delay_seconds,
            defaults.initial_delay,
            "retry.initial_delay_seconds",
            problems,
        ),
        max_delay: seconds(
            &wire.retry.max_delay_seconds,
            defaults.max_delay,
            "retry.max_delay_seconds",
            problems,
        ),
    };

    let outputs_group = wire.paths.outputs_group.as_ref().and_then(|g| {
        let name = resolve(g, "paths.outputs_group", problems)?;
        if name.is_empty() {
            // `${VAR:-}` unset: owner-only, as without the key
            return None;
        }
        let group = crate::privacy::Group::lookup(&name);
        if group.is_none() {
            problems.push(Problem::new(
                Some(g.span()),
                format!("`paths.outputs_group`: no group named {name:?} on this machine (see /etc/group)"),
            ));
        }
        group
    });

    // secrets written out rather than taken from the environment
    let literal_secrets = wire
        .sources
        .iter()
        .flat_map(|(name, source)| {
            let s = source.get_ref();
            [
                ("password", &s.password),
                ("access_key_id", &s.access_key_id),
                ("secret_access_key", &s.secret_access_key),
            ]
            .into_iter()
            .filter(|(_, v)| v.as_ref().is_some_and(|v| !v.get_ref().contains("${")))
            .map(move |(key, _)| format!("sources.{name}.{key}"))
        })
        .collect();

    Some(Manifest {
        path: path.to_path_buf(),
        tenant,
        sql_dir,
        vocab_dir,
        lake_dir,
        outputs_group,
        engine,
        sources,
        steps,
        retry,
        files: vec![path.to_path_buf()],
        literal_secrets,
        text: String::new(),
    })
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

type Resolve<'a> = dyn Fn(&Spanned<String>, &str, &mut Vec<Problem>) -> Option<String> + 'a;

/// The source's mappings to the staging contract: known entities and fields, the required
/// fields present, the table a mapping reads one of the source's own.
fn compile_maps(
    source: &Source,
    w: &SourceWire,
    base: &Path,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, crate::staging::EntityMap> {
    let mut out = BTreeMap::new();
    let Some(maps) = &w.map else {
        return out;
    };
    let name = &source.name;
    let entities: Vec<&str> = crate::staging::ENTITIES.iter().map(|(e, _)| *e).collect();
    for (entity, map) in maps.get_ref() {
        let key = format!("sources.{name}.map.{entity}");
        let Some(contract) = crate::staging::fields(entity) else {
            let hint = nearest(entity, entities.iter().copied())
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            problems.push(Problem::new(
                Some(map.span()),
                format!(
                    "`{key}`: the staging contract has no entity `{entity}`{hint}; it has {}",
                    list_or_none(&entities)
                ),
            ));
            continue;
        };
        let mut fields = BTreeMap::new();
        let mut spans = BTreeMap::new();
        let mut table = None;
        let mut model = None;
        for (field, value) in map.get_ref() {
            if field == "table" {
                table = Some(value);
                continue;
            }
            if field == "model" {
                let file = normalize(&base.join(value.get_ref()));
                if !file.is_file() {
                    problems.push(Problem::new(
                        Some(value.span()),
                        format!(
                            "`{key}.model`: staging model file {} does not exist",
                            file.display()
                        ),
                    ));
                }
                spans.insert("model".to_string(), value.span());
                model = Some(file);
                continue;
            }
            if contract.iter().any(|f| f.name == field) {
                fields.insert(field.clone(), value.get_ref().clone());
                spans.insert(field.clone(), value.span());
                let declared = match &source.kind {
                    SourceKind::S3(s3) => Some(&s3.columns),
                    SourceKind::Folder(folder) => Some(&folder.columns),
                    SourceKind::Postgres(_) => None,
                };
                if let Some(columns) = declared {
                    let v = value.get_ref();
                    let plain = crate::staging::expression(v).starts_with('"');
                    if plain && !columns.iter().any(|c| c.eq_ignore_ascii_case(v)) {
                        let hint = nearest(v, columns.iter().map(String::as_str))
                            .map(|n| format!(" (did you mean `{n}`?)"))
                            .unwrap_or_default();
                        problems.push(Problem::new(
                            Some(value.span()),
                            format!(
                                "`{key}.{field}`: column `{v}` is not one of source `{name}`'s `columns`{hint}"
                            ),
                        ));
                    }
                }
            } else {
                let names: Vec<&str> = contract.iter().map(|f| f.name).collect();
                let hint = nearest(field, names.iter().copied())
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default();
                problems.push(Problem::new(
                    Some(value.span()),
                    format!(
                        "`{key}.{field}`: `{field}` is not a field of the staging contract's {entity}{hint}; its fields are {}",
                        list_or_none(&names)
                    ),
                ));
            }
        }
        for f in contract.iter().filter(|f| f.required) {
            if !map.get_ref().contains_key(f.name) {
                problems.push(Problem::new(
                    Some(map.span()),
                    format!(
                        "`{key}` does not map `{}`, which the staging contract requires ({})",
                        f.name, f.doc
                    ),
                ));
            }
        }
        let raw = match (&source.kind, table) {
            (SourceKind::Postgres(pg), Some(t)) => {
                let t_name = t.get_ref();
                if !pg.tables.contains(t_name) {
                    problems.push(Problem::new(
                        Some(t.span()),
                        format!(
                            "`{key}.table`: `{t_name}` is not one of the source's tables ({})",
                            list_or_none(&pg.tables.iter().map(String::as_str).collect::<Vec<_>>())
                        ),
                    ));
                } else if !pg.keys.contains_key(t_name) {
                    problems.push(Problem::new(
                        Some(t.span()),
                        format!("`{key}.table`: table `{t_name}` needs a key in `sources.{name}.keys` (it identifies each row's lineage)"),
                    ));
                }
                crate::sources::raw_table(name, t_name)
            }
            (SourceKind::Postgres(_), None) => {
                problems.push(Problem::new(
                    Some(map.span()),
                    format!("`{key}` needs `table`: which of the source's tables holds the {entity} rows"),
                ));
                continue;
            }
            (SourceKind::S3(s3), None) => crate::sources::raw_table(name, &s3.table),
            (SourceKind::Folder(folder), None) => crate::sources::raw_table(name, &folder.table),
            (SourceKind::S3(_) | SourceKind::Folder(_), Some(t)) => {
                problems.push(Problem::new(
                    Some(t.span()),
                    format!(
                        "`{key}.table` does not apply to a file source: its rows are in one table"
                    ),
                ));
                continue;
            }
        };
        out.insert(
            entity.clone(),
            crate::staging::EntityMap {
                table: raw,
                model,
                fields,
                spans,
            },
        );
    }
    out
}

fn compile_source(
    name: &str,
    source: &Spanned<SourceWire>,
    resolve: &Resolve<'_>,
    problems: &mut Vec<Problem>,
) -> Option<Source> {
    let table_span = source.span();
    let w = source.get_ref();
    let kind = w.kind.get_ref().as_str();
    let key = |k: &str| format!("sources.{name}.{k}");

    // Keys that belong to the other kind.
    let postgres_only: [(&str, bool); 12] = [
        ("host", w.host.is_some()),
        ("port", w.port.is_some()),
        ("database", w.database.is_some()),
        ("user", w.user.is_some()),
        ("password", w.password.is_some()),
        ("schema", w.schema.is_some()),
        ("tables", w.tables.is_some()),
        ("cursor", w.cursor.is_some()),
        ("keys", w.keys.is_some()),
        ("lookback_seconds", w.lookback_seconds.is_some()),
        ("snapshot", w.snapshot.is_some()),
        ("detect_deletes", w.detect_deletes.is_some()),
    ];
    let bucket_only: [(&str, bool); 8] = [
        ("endpoint", w.endpoint.is_some()),
        ("region", w.region.is_some()),
        ("bucket", w.bucket.is_some()),
        ("prefix", w.prefix.is_some()),
        ("access_key_id", w.access_key_id.is_some()),
        ("secret_access_key", w.secret_access_key.is_some()),
        ("use_ssl", w.use_ssl.is_some()),
        ("url_style", w.url_style.is_some()),
    ];
    let files_only: [(&str, bool); 3] = [
        ("table", w.table.is_some()),
        ("columns", w.columns.is_some()),
        ("on_bad_file", w.on_bad_file.is_some()),
    ];
    let folder_only: [(&str, bool); 2] = [
        ("path", w.path.is_some()),
        ("settle_seconds", w.settle_seconds.is_some()),
    ];
    let misplaced = |keys: &[(&str, bool)], problems: &mut Vec<Problem>| {
        for (k, present) in keys {
            if *present {
                problems.push(Problem::new(
                    Some(w.kind.span()),
                    format!("`{}` does not apply to a {kind} source", key(k)),
                ));
            }
        }
    };
    let required =
        |v: &Option<Spanned<String>>, k: &str, problems: &mut Vec<Problem>| -> Option<String> {
            match v {
                Some(v) => resolve(v, &key(k), problems),
                None => {
                    problems.push(Problem::new(
                        Some(table_span.clone()),
                        format!("source `{name}` ({kind}) needs `{k}`"),
                    ));
                    None
                }
            }
        };
    let optional = |v: &Option<Spanned<String>>,
                    k: &str,
                    default: &str,
                    problems: &mut Vec<Problem>|
     -> String {
        v.as_ref()
            .and_then(|v| resolve(v, &key(k), problems))
            .unwrap_or_else(|| default.to_string())
    };
    let names = |v: &Option<Spanned<Vec<Spanned<String>>>>,
                 k: &str,
                 problems: &mut Vec<Problem>|
     -> Vec<String> {
        let Some(list) = v else {
            problems.push(Problem::new(
                Some(table_span.clone()),
                format!("source `{name}` ({kind}) needs `{k}`"),
            ));
            return Vec::new();
        };
        if list.get_ref().is_empty() {
            problems.push(Problem::new(
                Some(list.span()),
                format!("`{}` is empty", key(k)),
            ));
        }
        list.get_ref()
            .iter()
            .filter_map(|item| {
                let s = item.get_ref();
                if is_identifier(s) {
                    Some(s.clone())
                } else {
                    problems.push(Problem::new(
                        Some(item.span()),
                        format!(
                            "`{}`: {s:?} is not a plain name (letters, digits, `_`)",
                            key(k)
                        ),
                    ));
                    None
                }
            })
            .collect()
    };

    if !is_identifier(name) {
        problems.push(Problem::new(
            Some(table_span.clone()),
            format!("source name `{name}` must be letters, digits and `_` (it names raw tables)"),
        ));
    }

    // What every file-based kind has: the raw table, the columns, what a bad file does.
    let file_settings = |problems: &mut Vec<Problem>| {
        let on_bad_file = match w
            .on_bad_file
            .as_ref()
            .map(|s| (s.get_ref().as_str(), s.span()))
        {
            None | Some(("skip", _)) => OnBadFile::Skip,
            Some(("fail", _)) => OnBadFile::Fail,
            Some((other, span)) => {
                problems.push(Problem::new(
                    Some(span),
                    format!(
                        "`{}`: {other:?} is not a choice: expected \"skip\" or \"fail\"",
                        key("on_bad_file")
                    ),
                ));
                OnBadFile::Skip
            }
        };
        let table = optional(&w.table, "table", "provider", problems);
        if !is_identifier(&table) {
            problems.push(Problem::new(
                w.table.as_ref().map(|t| t.span()),
                format!("`{}`: {table:?} is not a plain name", key("table")),
            ));
        }
        let columns = match &w.columns {
            Some(list) => list.get_ref().iter().map(|c| c.get_ref().clone()).collect(),
            None => {
                problems.push(Problem::new(
                    Some(table_span.clone()),
                    format!("source `{name}` ({kind}) needs `columns`: the columns its files are expected to have"),
                ));
                Vec::new()
            }
        };
        (table, columns, on_bad_file)
    };

    match kind {
        "postgres" => {
            misplaced(&bucket_only, problems);
            misplaced(&files_only, problems);
            misplaced(&folder_only, problems);
            let host = required(&w.host, "host", problems);
            let port = match &w.port {
                None => Some(5432),
                Some(p) => {
                    resolve(p, &key("port"), problems).and_then(|s| match s.parse::<u16>() {
                        Ok(port) if port > 0 => Some(port),
                        _ => {
                            problems.push(Problem::new(
                                Some(p.span()),
                                format!("`{}`: {s:?} is not a port number (1-65535)", key("port")),
                            ));
                            None
                        }
                    })
                }
            };
            let database = required(&w.database, "database", problems);
            let user = required(&w.user, "user", problems);
            let password = required(&w.password, "password", problems);
            let schema = optional(&w.schema, "schema", "public", problems);
            let tables = names(&w.tables, "tables", problems);
            let snapshot: Vec<String> = match &w.snapshot {
                None => Vec::new(),
                Some(list) => list
                    .get_ref()
                    .iter()
                    .filter_map(|t| {
                        if tables.contains(t.get_ref()) {
                            Some(t.get_ref().clone())
                        } else {
                            problems.push(Problem::new(
                                Some(t.span()),
                                format!(
                                    "`{}`: `{}` is not one of the source's tables",
                                    key("snapshot"),
                                    t.get_ref()
                                ),
                            ));
                            None
                        }
                    })
                    .collect(),
            };
            let cursor = w.cursor.as_ref().map(|c| c.get_ref().clone());
            let mut keys = BTreeMap::new();
            if let Some(k) = &w.keys {
                for (table, column) in k.get_ref() {
                    if !tables.contains(table) {
                        problems.push(Problem::new(
                            Some(k.span()),
                            format!(
                                "`{}`: `{table}` is not one of the source's tables",
                                key("keys")
                            ),
                        ));
                    }
                    keys.insert(table.clone(), column.get_ref().clone());
                }
            }
            if cursor.is_some() {
                for table in tables.iter().filter(|t| !snapshot.contains(t)) {
                    if !keys.contains_key(table) {
                        problems.push(
                            Problem::new(
                                w.cursor.as_ref().map(|c| c.span()),
                                format!("table `{table}` is read incrementally (`cursor`) but `{}` names no key for it", key("keys")),
                            )
                            .help(format!("add `keys = {{ {table} = \"{table}_id\" }}`, or list it in `snapshot` to read it whole")),
                        );
                    }
                }
            }
            Some(Source {
                maps: BTreeMap::new(),
                name: name.to_string(),
                kind: SourceKind::Postgres(PostgresSource {
                    host: host?,
                    port: port?,
                    database: database?,
                    user: user?,
                    password: Secret::new(password?),
                    schema,
                    tables,
                    cursor,
                    keys,
                    lookback: std::time::Duration::from_secs(
                        w.lookback_seconds.as_ref().map_or(3600, |l| *l.get_ref()),
                    ),
                    snapshot,
                    detect_deletes: w.detect_deletes.as_ref().is_none_or(|d| *d.get_ref()),
                }),
            })
        }
        "s3" => {
            misplaced(&postgres_only, problems);
            misplaced(&folder_only, problems);
            let endpoint = required(&w.endpoint, "endpoint", problems);
            let region = optional(&w.region, "region", "us-east-1", problems);
            let bucket = required(&w.bucket, "bucket", problems);
            let prefix = optional(&w.prefix, "prefix", "", problems);
            let access_key_id = required(&w.access_key_id, "access_key_id", problems);
            let secret_access_key = required(&w.secret_access_key, "secret_access_key", problems);
            let url_style = match w
                .url_style
                .as_ref()
                .map(|s| (s.get_ref().as_str(), s.span()))
            {
                None | Some(("path", _)) => UrlStyle::Path,
                Some(("vhost", _)) => UrlStyle::Vhost,
                Some((other, span)) => {
                    problems.push(Problem::new(
                        Some(span),
                        format!(
                            "`{}`: {other:?} is not a URL style: expected \"path\" or \"vhost\"",
                            key("url_style")
                        ),
                    ));
                    UrlStyle::Path
                }
            };
            let (table, columns, on_bad_file) = file_settings(problems);
            Some(Source {
                maps: BTreeMap::new(),
                name: name.to_string(),
                kind: SourceKind::S3(S3Source {
                    endpoint: endpoint?,
                    region,
                    bucket: bucket?,
                    prefix,
                    access_key_id: Secret::new(access_key_id?),
                    secret_access_key: Secret::new(secret_access_key?),
                    use_ssl: w.use_ssl.as_ref().is_some_and(|b| *b.get_ref()),
                    url_style,
                    table,
                    columns,
                    on_bad_file,
                }),
            })
        }
        "folder" => {
            misplaced(&postgres_only, problems);
            misplaced(&bucket_only, problems);
            let path = required(&w.path, "path", problems);
            let settle = match &w.settle_seconds {
                None => std::time::Duration::from_secs(1),
                Some(v) if v.get_ref().is_finite() && *v.get_ref() >= 0.0 => {
                    std::time::Duration::from_secs_f64(*v.get_ref())
                }
                Some(v) => {
                    problems.push(Problem::new(
                        Some(v.span()),
                        format!(
                            "`{}` must be a number of seconds, 0 or more",
                            key("settle_seconds")
                        ),
                    ));
                    std::time::Duration::from_secs(1)
                }
            };
            let (table, columns, on_bad_file) = file_settings(problems);
            Some(Source {
                maps: BTreeMap::new(),
                name: name.to_string(),
                kind: SourceKind::Folder(FolderSource {
                    // resolved against the manifest's folder by `compile`
                    path: PathBuf::from(path?),
                    settle,
                    table,
                    columns,
                    on_bad_file,
                }),
            })
        }
        other => {
            let mut p = Problem::new(
                Some(w.kind.span()),
                format!(
                    "source `{name}` has unknown kind {other:?}: expected \"postgres\", \"s3\" or \"folder\""
                ),
            );
            if let Some(near) = nearest(other, ["postgres", "s3", "folder"]) {
                p = p.help(format!("did you mean \"{near}\"?"));
            }
            problems.push(p);
            None
        }
    }
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

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests;
