//! Files, wherever they are kept: what every file-based source kind shares. A [`Store`]
//! (a bucket, a folder) lists files with a version tag and says where DuckDB reads each;
//! everything else is here: which files are new (the ledger: same key and tag, not read
//! again), formats, reading the CSV files of one header in one scan and a file on its own
//! when it needs it (a line that cannot be parsed, another encoding, JSON) so a bad one is
//! recorded and skipped while the good ones load, schema drift, unparsable lines, and
//! loading into the raw layer.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::engine::{ident, literal, Engine};
use crate::manifest::{Layout, OnBadFile};
use crate::progress::Progress;
use crate::sources::{raw_table, Connector, Fetched};
use crate::staging::Lineage;

/// The columns etl adds to every file row in the raw layer, as a typed empty relation's.
const ETL_COLUMNS: &[&str] = &[
    "null::varchar as _object_key",
    "null::bigint as _row",
    "null::varchar as _format",
    "null::varchar as _etag",
    "null::timestamptz as _last_modified",
    "null::varchar as _extra",
];

/// How many of the newest files `etl validate` reads the header of, looking for an example
/// of each layout.
const SAMPLED_FILES: usize = 50;

/// Where files are kept: a bucket, a folder.
pub trait Store: Sync {
    /// The store in messages, never with a secret: `s3 http://…, bucket b`, `folder /p`.
    fn endpoint(&self) -> String;
    /// Where the source's files are, for `etl plan`: `s3://b/prefix/`, `/p/`.
    fn location(&self) -> String;
    /// Checks the store can be used (a folder that exists), before anything is read.
    fn connect(&self, engine: &Engine, name: &str) -> Result<()>;
    /// Lets `engine` read the store's files (a scoped secret, an extension): done when
    /// DuckDB first reads one, so a run with nothing new loads nothing for it.
    fn open_in(&self, _engine: &Engine, _name: &str) -> Result<()> {
        Ok(())
    }
    /// Every file, sorted by key, with a tag that changes when its content does.
    fn list(&self) -> Result<Vec<ObjectInfo>>;
    /// Where DuckDB reads the file of `key`, and how messages name it.
    fn url(&self, key: &str) -> String;
    /// After a failed read: is the file still there and the same?
    fn probe(&self, object: &ObjectInfo) -> Probe;
    /// The file's first `bytes` bytes (fewer when it is shorter): its header, which decides
    /// which files are read together.
    fn head(&self, object: &ObjectInfo, bytes: u64) -> Result<Vec<u8>>;
    /// Copies the file to `to` when reading it from a local copy is faster than where it
    /// is (a bucket); false when DuckDB reads it where it is (a folder).
    fn download(&self, _object: &ObjectInfo, _to: &Path) -> Result<bool> {
        Ok(false)
    }
    /// Whether DuckDB reads the store's files as local paths, with nothing `open_in` sets
    /// (a folder): then any connection may read them.
    fn local(&self) -> bool {
        false
    }
}

/// How a source's files become rows: the raw table, the columns expected, what a bad file
/// does to the run.
#[derive(Debug, Clone)]
pub struct FileSettings {
    /// The shapes of file the source receives; each file takes the one its header matches.
    pub layouts: Vec<Layout>,
    pub on_bad_file: OnBadFile,
    /// The CSV files' encoding; None: detected (UTF-8, else Windows-1252).
    pub encoding: Option<String>,
}

impl FileSettings {
    /// The layout whose rows go to `raw` (a raw table of `source`).
    fn layout_of(&self, source: &str, raw: &str) -> Option<&Layout> {
        self.layouts
            .iter()
            .find(|l| raw_table(source, &l.table) == raw)
    }
}

/// A file-based source, as the run, `etl plan`, `etl validate` and `etl state` see it.
pub struct FileSource<'a> {
    pub name: &'a str,
    pub files: FileSettings,
    pub store: Box<dyn Store + 'a>,
    /// Connected (`connect`), and not yet opened in the engine (`Store::open_in`), which
    /// happens when DuckDB first reads one of its files.
    pub unopened: std::cell::Cell<bool>,
}

impl FileSource<'_> {
    /// Opens the store in `engine`, once: before DuckDB reads one of its files.
    fn open(&self, engine: &Engine) -> Result<()> {
        if self.unopened.take() {
            self.store.open_in(engine, self.name)?;
        }
        Ok(())
    }
}

impl Connector for FileSource<'_> {
    fn describe(&self) -> String {
        format!("source `{}` ({})", self.name, self.store.endpoint())
    }

    fn connect(&self, engine: &Engine) -> Result<()> {
        self.store.connect(engine, self.name)?;
        self.unopened.set(true);
        Ok(())
    }

    fn check(&self, _engine: &Engine) -> Result<String> {
        let objects = self.store.list()?;
        Ok(format!(
            "{} objects under {}",
            objects.len(),
            self.store.location()
        ))
    }

    fn plan(
        &self,
        _engine: &Engine,
        lake: Option<&Engine>,
        full_refresh: bool,
    ) -> Result<Vec<String>> {
        let known = match (lake, full_refresh) {
            (Some(engine), false) => ledger(engine, self.name)?,
            _ => HashMap::new(),
        };
        let chosen = select(self.store.list()?, &known);
        let changed = chosen.read.iter().filter(|(_, changed)| *changed).count();
        let bytes: u64 = chosen.read.iter().map(|(o, _)| o.size).sum();
        let mut lines = vec![format!(
            "read   {}: {} of {} objects ({changed} changed), {bytes} bytes",
            self.store.location(),
            chosen.read.len(),
            chosen.listed,
        )];
        for (object, _) in chosen.read.iter().take(20) {
            lines.push(format!("         {}", object.key));
        }
        if chosen.read.len() > 20 {
            lines.push(format!("         … and {} more", chosen.read.len() - 20));
        }
        lines.push(format!(
            "write  {} (rows of those objects)",
            self.files
                .layouts
                .iter()
                .map(|l| raw_table(self.name, &l.table))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(lines)
    }

    fn fetch(
        &self,
        engine: &Engine,
        staging: &Path,
        full_refresh: bool,
        progress: &Progress,
    ) -> Result<Box<dyn Fetched>> {
        let fetched = fetch(engine, self, staging, full_refresh, progress)?;
        Ok(Box::new(FetchedObjects {
            name: self.name.to_string(),
            files: self.files.clone(),
            fetched,
        }))
    }

    fn mapped_relation(&self, raw: &str) -> Result<Option<String>> {
        let Some(layout) = self.files.layout_of(self.name, raw) else {
            return Ok(None);
        };
        // the raw table's shape: the layout's columns, as text, and what etl adds
        let mut cols: Vec<String> = layout
            .columns
            .iter()
            .map(|c| format!("null::varchar as {}", ident(c)))
            .collect();
        cols.extend(ETL_COLUMNS.iter().map(|c| c.to_string()));
        Ok(Some(format!("(select {})", cols.join(", "))))
    }

    fn samples(&self, engine: &Engine) -> Result<BTreeMap<String, (String, String)>> {
        self.open(engine)?;
        // newest first; a layout takes the newest file whose header matches it best
        let mut objects = self.store.list()?;
        objects.sort_by(|a, b| {
            b.last_modified
                .cmp(&a.last_modified)
                .then(a.key.cmp(&b.key))
        });
        let mut out = BTreeMap::new();
        for object in objects.iter().filter(|o| o.size > 0).take(SAMPLED_FILES) {
            let reader = match format_of(&object.key) {
                Some(Format::Csv) => format!(
                    "read_csv({}, all_varchar = true, header = true)",
                    literal(&object.url)
                ),
                Some(Format::Json) => {
                    format!("read_json({}, format = 'auto')", literal(&object.url))
                }
                None => continue,
            };
            let columns = match engine.columns_of(&format!("select * from {reader} limit 0")) {
                Ok(columns) => columns,
                Err(err) => {
                    log::debug!("  {}: header not read: {err:#}", object.key);
                    continue;
                }
            };
            let Some(layout) = best_layout(&self.files, &columns) else {
                log::debug!("  {}: its header matches no layout", object.key);
                continue;
            };
            let raw = raw_table(self.name, &layout.table);
            if out.contains_key(&raw) {
                continue;
            }
            let mut cols: Vec<String> = columns
                .iter()
                .map(|(c, _)| format!("null::varchar as {}", ident(c.trim())))
                .collect();
            cols.extend(ETL_COLUMNS.iter().map(|c| c.to_string()));
            out.insert(
                raw,
                (
                    format!("(select {})", cols.join(", ")),
                    format!(
                        "the newest file of layout `{}` ({})",
                        layout.name, object.key
                    ),
                ),
            );
            if out.len() == self.files.layouts.len() {
                break;
            }
        }
        Ok(out)
    }

    fn describe_table(&self, _raw: &str) -> String {
        format!("the files of source `{}` (its `columns`)", self.name)
    }

    fn lineage(&self, raw: &str) -> Lineage {
        Lineage {
            kind: "files",
            source_ref: "_object_key".into(),
            source_row: "_row".into(),
            source_order: "_row".into(),
            recency: "_last_modified".into(),
            deleted_at: "null".into(),
            etl_columns: vec!["_run_id", "_loaded_at"],
            rejects: Some(format!("{raw}_rejects")),
        }
    }

    fn reset(&self, engine: &Engine) -> Result<(&'static str, String)> {
        let s = literal(self.name);
        let n = engine.query_i64(&format!(
            "select count(*) from etl.file_ledger where source = {s}"
        ))?;
        engine.execute(&format!("delete from etl.file_ledger where source = {s}"))?;
        Ok((
            "file ledger cleared",
            format!(
                "{n} ledger entries of source `{}`: every object is read again next run",
                self.name
            ),
        ))
    }
}

/// The objects a fetch staged, waiting for the run's transaction.
struct FetchedObjects {
    name: String,
    files: FileSettings,
    fetched: Staging,
}

impl Fetched for FetchedObjects {
    fn load(self: Box<Self>, engine: &Engine, run_id: &str, full_refresh: bool) -> Result<i64> {
        let stats = load(
            engine,
            &self.name,
            &self.files,
            &self.fetched,
            run_id,
            full_refresh,
        )?;
        log::info!(
            "  {} objects listed: {} new or changed read, {} unchanged skipped, {} rejected",
            stats.listed,
            stats.loaded,
            stats.skipped_unchanged,
            stats.rejected
        );
        Ok(stats.rows)
    }
}

/// Which listed objects a run reads: those the ledger does not hold, or holds with another
/// ETag (`true`: changed since it was read). A run and `etl plan` both decide here.
pub struct Selection {
    pub listed: usize,
    pub unchanged: usize,
    pub read: Vec<(ObjectInfo, bool)>,
}

pub fn select(objects: Vec<ObjectInfo>, known: &HashMap<String, String>) -> Selection {
    let mut chosen = Selection {
        listed: objects.len(),
        unchanged: 0,
        read: Vec::new(),
    };
    for object in objects {
        match known.get(&object.key) {
            Some(etag) if *etag == object.etag => chosen.unchanged += 1,
            Some(_) => chosen.read.push((object, true)),
            None => chosen.read.push((object, false)),
        }
    }
    chosen
}

/// One file as its store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    /// Changes when the content does (an S3 ETag, a folder file's content hash).
    pub etag: String,
    pub size: u64,
    pub last_modified: String,
    /// Where it is read from, and how messages name it.
    pub url: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExtractStats {
    pub listed: usize,
    pub skipped_unchanged: usize,
    pub loaded: usize,
    pub rejected: usize,
    pub rows: i64,
    pub rejected_rows: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

fn format_of(key: &str) -> Option<Format> {
    let lower = key.to_ascii_lowercase();
    let lower = lower.strip_suffix(".gz").unwrap_or(&lower);
    if lower.ends_with(".csv") || lower.ends_with(".txt") || lower.ends_with(".tsv") {
        Some(Format::Csv)
    } else if lower.ends_with(".json") || lower.ends_with(".ndjson") || lower.ends_with(".jsonl") {
        Some(Format::Json)
    } else {
        None
    }
}

/// The columns etl sets per object or per run in a raw table of files: stored with a
/// dictionary ([`crate::sources::distinct_text_columns`]).
const PER_OBJECT: &[&str] = &["_object_key", "_format", "_etag", "_run_id", "_extra"];

/// Whether the raw table exists; when it does, checks it still has the columns the
/// manifest expects.
fn check_raw_table(engine: &Engine, table: &str, columns: &[String]) -> Result<bool> {
    let (schema, name) = table.split_once('.').unwrap_or(("main", table));
    let exists = engine.query_i64(&format!(
        "select count(*) from duckdb_tables() where schema_name = {} and table_name = {}",
        literal(schema),
        literal(name)
    ))? > 0;
    if !exists {
        return Ok(false);
    }
    let have: Vec<String> = engine
        .columns_of(&format!("select * from {table}"))?
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| !name.starts_with('_'))
        .collect();
    if have != columns {
        bail!(
            "{table} holds columns {have:?} but the manifest now expects {columns:?}: \
             rerun with --full-refresh to reload every file with the new columns"
        );
    }
    create_rejects_table(engine, table)?;
    Ok(true)
}

fn create_rejects_table(engine: &Engine, table: &str) -> Result<()> {
    engine.execute(&format!(
        "create table if not exists {table}_rejects (object_key varchar not null, line bigint, \
         raw_line varchar, error varchar, run_id varchar not null)"
    ))
}

/// Creates the raw table and its rejects' table. `sample`, the rows of its first load as
/// they will be inserted, decides which columns are stored with FSST
/// ([`crate::sources::distinct_text_columns`]).
fn create_raw_table(
    engine: &Engine,
    table: &str,
    columns: &[String],
    sample: Option<&str>,
) -> Result<()> {
    let fsst = match sample {
        Some(sample) => crate::sources::distinct_text_columns(engine, sample)?,
        None => Vec::new(),
    };
    let column = |name: &str, ty: &str| crate::sources::raw_column(name, ty, &fsst, PER_OBJECT);
    let mut cols = vec![
        format!("{} not null", column("_object_key", "varchar")),
        "_row bigint not null".to_string(),
        format!("{} not null", column("_format", "varchar")),
        format!("{} not null", column("_etag", "varchar")),
        "_last_modified timestamptz".to_string(),
        format!("{} not null", column("_run_id", "varchar")),
        "_loaded_at timestamptz not null".to_string(),
    ];
    cols.extend(columns.iter().map(|c| column(c, "varchar")));
    cols.push(column("_extra", "varchar"));
    engine.execute(&format!("create table {table} ({})", cols.join(", ")))?;
    create_rejects_table(engine, table)
}

/// The ETag of every object of this source already read: object key -> ETag.
fn ledger(engine: &Engine, source: &str) -> Result<HashMap<String, String>> {
    Ok(engine
        .query_strings(&format!(
            "select object_key, etag from etl.file_ledger where source = {}",
            literal(source)
        ))?
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default(),
            )
        })
        .collect())
}

/// One object as `fetch` left it for `load`.
pub struct StagedObject {
    pub object: ObjectInfo,
    pub state: Staged,
}

/// An object's records in a file of several objects' (`read_group`): the rows whose
/// `_etl_object` is its URL, numbered in the file from `first_row` (0-based).
pub struct Part {
    pub url: String,
    pub first_row: i64,
    pub rows: i64,
}

/// Where `fetch` staged an object's records for `load`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Records {
    /// A local Parquet file, in the object's order (its row numbers are the file's).
    Parquet(PathBuf),
    /// A temporary table of the run's connection, in the order of the scan that filled it
    /// (its row numbers are the table's row ids): the CSV objects read in one scan.
    Table(String),
}

impl Records {
    /// The records as a relation.
    fn relation(&self) -> String {
        match self {
            Records::Parquet(file) => format!("read_parquet({})", literal(&file.to_string_lossy())),
            Records::Table(table) => format!("temp.{}", ident(table)),
        }
    }

    /// What names them among the sources of one insert (`insert_prepared`).
    fn id(&self) -> String {
        match self {
            Records::Parquet(file) => file.to_string_lossy().into_owned(),
            Records::Table(table) => table.clone(),
        }
    }
}

pub enum Staged {
    /// The object's records, and local Parquet of the lines the reader could not parse.
    Data {
        format: Format,
        records: Records,
        rejects: Option<PathBuf>,
        /// The encoding a CSV was decoded from, when not UTF-8.
        decoded_from: Option<String>,
        /// Where the object's records are when `records` holds those of several objects.
        part: Option<Part>,
    },
    Empty,
    Rejected(String),
}

/// What `fetch` found in the bucket and staged.
pub struct Staging {
    pub listed: usize,
    pub unchanged: usize,
    pub objects: Vec<StagedObject>,
}

/// Lists the bucket and stages every new or changed object's records locally: in Parquet, or
/// in a temporary table for the CSV objects read in one scan (`Records`). Runs outside
/// the run's transaction: a bad object fails alone, and a network fault fails the fetch
/// before anything is written (and, being transient, may be retried).
///
/// CSV objects with the same header are read together, in one scan (`read_group`); an
/// object of such a scan with a line the reader could not parse, and every object of a
/// scan that failed, is read again on its own (`fetch_object`), which detects its encoding
/// and keeps its unparsable lines, and rejects it alone when it is bad. JSON objects read
/// from local files (a copy, a folder's) are read one by one on a second connection beside
/// those scans.
fn fetch(
    engine: &Engine,
    source: &FileSource,
    staging: &Path,
    full_refresh: bool,
    progress: &Progress,
) -> Result<Staging> {
    let (name, files, store) = (source.name, &source.files, source.store.as_ref());
    for encoding in files
        .encoding
        .iter()
        .chain(files.layouts.iter().filter_map(|l| l.encoding.as_ref()))
    {
        check_encoding(engine, name, encoding, staging)?;
    }
    let objects = store.list().context("cannot list objects")?;
    let known = if full_refresh {
        HashMap::new()
    } else {
        ledger(engine, name)?
    };
    let chosen = select(objects, &known);
    std::fs::create_dir_all(staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let bar = progress.bar(chosen.read.len() as u64, "objects");
    let mut states: Vec<Option<Staged>> = chosen.read.iter().map(|_| None).collect();
    // Each object as it is read: from its local copy when the store makes one (`copies`).
    let copying = std::time::Instant::now();
    let reads = copies(store, &chosen.read, &staging.join("objects"))?;
    let copied: Vec<&ObjectInfo> = reads
        .iter()
        .filter(|r| r.url.is_some())
        .map(|r| &r.read)
        .collect();
    if !copied.is_empty() {
        log::debug!(
            "  copied {} objects ({} bytes) to read them locally in {:.2}s",
            copied.len(),
            copied.iter().map(|o| o.size).sum::<u64>(),
            copying.elapsed().as_secs_f64()
        );
    }
    // (DuckDB reads the store itself only for an object to read that has no copy)
    if reads.iter().any(|r| r.url.is_none() && to_read(&r.read)) {
        source.open(engine)?;
    }
    // (a layout with an encoding of its own is known from each file's header: read alone)
    let grouping = files.layouts.iter().all(|l| l.encoding.is_none());
    let mut by_header: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
    let headers = if grouping {
        headers_of(store, &reads)
    } else {
        Vec::new()
    };
    for (i, (object, changed)) in chosen.read.iter().enumerate() {
        if *changed {
            log::info!(
                "  {}: changed since it was read (new ETag), reading it again",
                object.key
            );
        }
        if object.size == 0 {
            bar.inc(1);
            states[i] = Some(Staged::Empty);
        } else if format_of(&object.key).is_none() {
            bar.inc(1);
            states[i] = Some(Staged::Rejected(
                "unknown file type: expected .csv, .txt, .tsv, .json, .ndjson or .jsonl (optionally .gz)".into(),
            ));
        } else if let Some(Some(header)) = headers.get(i) {
            by_header.entry(header.clone()).or_default().push(i);
        }
    }
    // JSON objects read from local files are read on a second connection while the CSV
    // scans run on this one: DuckDB reads a JSON file on about one core. (An object read
    // from a bucket uses what `open` set on this connection: it is read below.)
    let beside: Vec<usize> = (0..reads.len())
        .filter(|&i| {
            let read = &reads[i];
            (read.url.is_some() || store.local())
                && to_read(&read.read)
                && format_of(&read.read.key) == Some(Format::Json)
        })
        .collect();
    let (groups, mut read_beside) = if beside.is_empty() {
        let groups = read_groups(engine, by_header, &reads, files, name);
        (groups, HashMap::new())
    } else {
        let other = engine.try_clone()?;
        let (indices, all) = (&beside, &reads);
        std::thread::scope(|scope| {
            let side = scope.spawn(move || {
                let read = |&i: &usize| {
                    let fetched =
                        fetch_object(&other, &all[i].read, Format::Json, files, staging, i);
                    (i, fetched)
                };
                indices.iter().map(read).collect::<HashMap<_, _>>()
            });
            let groups = read_groups(engine, by_header, all, files, name);
            let side = side.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            (groups, side)
        })
    };
    for (i, part) in groups {
        bar.inc(1);
        states[i] = Some(part);
    }
    let mut fetched = Staging {
        listed: chosen.listed,
        unchanged: chosen.unchanged,
        objects: Vec::new(),
    };
    for (i, (object, _)) in chosen.read.into_iter().enumerate() {
        let state = match states[i].take() {
            Some(state) => state,
            None => {
                bar.inc(1);
                let format = format_of(&object.key).expect("unknown types were rejected above");
                let read = &reads[i];
                let result = match read_beside.remove(&i) {
                    Some(result) => result,
                    None => fetch_object(engine, &read.read, format, files, staging, i),
                };
                match result {
                    Ok(state) => {
                        log::debug!("  fetched {} ({} bytes)", object.key, object.size);
                        state
                    }
                    // Is the object bad, or did the source fail? Ask the source, not the text.
                    Err(err) => match store.probe(&object) {
                        Probe::Same => Staged::Rejected(read.named(&format!("{err:#}"))),
                        Probe::Changed => Staged::Rejected(format!(
                            "the object changed while it was read; it will be read again next run ({})",
                            read.named(&format!("{err:#}"))
                        )),
                        Probe::Failed(transient) => {
                            return Err(transient).context(format!(
                                "reading {} failed: {}",
                                object.url,
                                read.named(&format!("{err:#}"))
                            ))
                        }
                    },
                }
            }
        };
        if let (Staged::Rejected(reason), OnBadFile::Fail) = (&state, files.on_bad_file) {
            bail!("bad file {}: {reason} (on_bad_file = \"fail\")", object.url);
        }
        fetched.objects.push(StagedObject { object, state });
    }
    bar.finish_and_clear();
    // (every object is read now: the copies' disk space is given back before the load)
    let _ = std::fs::remove_dir_all(staging.join("objects"));
    Ok(fetched)
}

/// Reads each group of CSV objects of one header in one scan (`read_group`): each object
/// read so, with its part of the scan. An object with a line the reader could not parse, and
/// every object of a scan that failed, is left out, to be read alone.
fn read_groups(
    engine: &Engine,
    by_header: BTreeMap<Vec<u8>, Vec<usize>>,
    reads: &[Read],
    files: &FileSettings,
    name: &str,
) -> Vec<(usize, Staged)> {
    let mut staged = Vec::new();
    for (n, members) in by_header.into_values().filter(|m| m.len() > 1).enumerate() {
        let group: Vec<&ObjectInfo> = members.iter().map(|&i| &reads[i].read).collect();
        log::debug!(
            "  reading {} objects with one header in one scan, from {}",
            group.len(),
            group[0].key
        );
        match read_group(engine, &group, files, name, n) {
            Ok(parts) => {
                for ((&i, object), part) in members.iter().zip(&group).zip(parts) {
                    if let Some(part) = part {
                        log::debug!("  fetched {} with {} others", object.key, group.len() - 1);
                        staged.push((i, part));
                    }
                }
            }
            Err(err) => {
                let reason = members
                    .iter()
                    .fold(format!("{err:#}"), |e, &i| reads[i].named(&e));
                log::info!(
                    "  {} objects with one header could not be read together, reading each alone: {reason}",
                    group.len()
                )
            }
        }
    }
    staged
}

/// An object as it is read: from its local copy, if any (then `read.url` is the copy's
/// path), else where it is.
struct Read {
    read: ObjectInfo,
    /// Where the object is, when `read.url` is a local copy's path.
    url: Option<String>,
}

impl Read {
    /// A message about the read, naming the object where it is rather than its copy.
    fn named(&self, message: &str) -> String {
        match &self.url {
            Some(url) => message.replace(&self.read.url, url),
            None => message.to_string(),
        }
    }
}

/// Whether DuckDB reads the object's bytes: it is not empty and of a known format.
fn to_read(object: &ObjectInfo) -> bool {
    object.size > 0 && format_of(&object.key).is_some()
}

/// The first `bytes` bytes of a local file (fewer when it is shorter).
pub fn local_head(path: &str, bytes: u64) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("cannot open {path}"))?
        .take(bytes)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read {path}"))?;
    Ok(head)
}

/// How many objects are copied at a time.
const COPY_WORKERS: usize = 4;

/// Objects copied to local files, `COPY_WORKERS` at a time, when the store makes copies
/// (a bucket): DuckDB reads a bucket's objects one request after another, and copies are
/// read at the speed of the disk (the benchmark's 20 CSV objects of 1M rows: 0.8 s read
/// where they are, 0.45 s from copies). The store failing (a transient fault) fails the
/// fetch, as a read would. An object that cannot be copied otherwise (a local disk full,
/// an object gone), or whose copy is not the size listed (it changed meanwhile), is read
/// where it is, as without copies, and its failure, if any, is reported as then.
fn copies(store: &dyn Store, objects: &[(ObjectInfo, bool)], dir: &Path) -> Result<Vec<Read>> {
    let in_place = |o: &ObjectInfo| Read {
        read: o.clone(),
        url: None,
    };
    if objects.iter().any(|(o, _)| to_read(o)) && std::fs::create_dir_all(dir).is_err() {
        return Ok(objects.iter().map(|(o, _)| in_place(o)).collect());
    }
    let copy = |(n, (object, _)): (usize, &(ObjectInfo, bool))| -> Result<Read> {
        let name = object.key.rsplit('/').next().unwrap_or_default();
        let to = dir.join(format!("{n:06}-{name}"));
        let copied = to_read(object)
            && match store.download(object, &to) {
                Ok(copied) => {
                    copied && std::fs::metadata(&to).is_ok_and(|m| m.len() == object.size)
                }
                Err(err) if crate::retry::is_transient(&err) => {
                    return Err(err).context(format!("copying {} failed", object.url))
                }
                Err(err) => {
                    log::debug!("  {}: not copied, read where it is: {err:#}", object.key);
                    false
                }
            };
        if !copied {
            let _ = std::fs::remove_file(&to);
            return Ok(in_place(object));
        }
        let mut read = object.clone();
        read.url = to.to_string_lossy().into_owned();
        Ok(Read {
            read,
            url: Some(object.url.clone()),
        })
    };
    // (a queue, not rounds of four: an object waits for a free worker, not for the
    // slowest of its round; the 1 GB of objects of the benchmark at 10M rows: 2.9 s in
    // rounds, 2.3 s from a queue, 3.2 s one at a time)
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, Result<Read>)> = std::thread::scope(|scope| {
        let running: Vec<_> = (0..COPY_WORKERS.min(objects.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(object) = objects.get(n) else {
                            return done;
                        };
                        done.push((n, copy((n, object))));
                    }
                })
            })
            .collect();
        running
            .into_iter()
            .flat_map(|r| r.join().unwrap_or_default())
            .collect()
    });
    done.sort_by_key(|(n, _)| *n);
    let mut done = done.into_iter().peekable();
    let mut reads = Vec::with_capacity(objects.len());
    for (n, (object, _)) in objects.iter().enumerate() {
        // (the objects of a worker that panicked are read where they are)
        match done.next_if(|(m, _)| *m == n) {
            Some((_, read)) => reads.push(read?),
            None => reads.push(in_place(object)),
        }
    }
    Ok(reads)
}

/// The header line of each CSV object, read 8 at a time (small requests: their time is the
/// store's latency), from its copy when it has one.
fn headers_of(store: &dyn Store, objects: &[Read]) -> Vec<Option<Vec<u8>>> {
    let mut headers = Vec::with_capacity(objects.len());
    for chunk in objects.chunks(8) {
        std::thread::scope(|scope| {
            let reads: Vec<_> = chunk
                .iter()
                .map(|object| scope.spawn(move || header_of(store, object)))
                .collect();
            headers.extend(reads.into_iter().map(|r| r.join().ok().flatten()));
        });
    }
    headers
}

/// The bytes of a CSV object's header line, its line end included; None when it is not read
/// together with others: not CSV, compressed, empty, a header longer than 64 KiB, a failed
/// read, or a file whose first 64 KiB hold a single quote or a backslash (it may quote or
/// escape otherwise than a scan of several files reads them: `"` for both).
fn header_of(store: &dyn Store, read: &Read) -> Option<Vec<u8>> {
    let object = &read.read;
    if format_of(&object.key) != Some(Format::Csv)
        || object.size == 0
        || object.key.to_ascii_lowercase().ends_with(".gz")
    {
        return None;
    }
    let head = match read.url {
        Some(_) => local_head(&object.url, 64 * 1024).ok()?,
        None => store.head(object, 64 * 1024).ok()?,
    };
    if head.iter().any(|&b| b == b'\'' || b == b'\\') {
        return None;
    }
    let end = head.iter().position(|&b| b == b'\n')?;
    Some(head[..end].to_vec())
}

/// Reads CSV objects with one header in one scan into one temporary table, each row with
/// the object's URL (`_etl_object`), in file order (the fetch keeps insertion order, so
/// the table's row ids number the rows; staging them in Parquet instead took 3.6 s for 8M
/// rows, the table 1.7 s, in the CLI; extracting 10M file rows went 13.3 s to 12.4 s). Gives
/// each object's part of it, or None for an object with a line the reader could not parse:
/// that one is read again alone. The scan quotes and escapes with `"` (RFC 4180): DuckDB
/// would otherwise take the dialect of the first file for all, and a first file that
/// quotes nothing would leave the quotes of the others in their values.
fn read_group(
    engine: &Engine,
    group: &[&ObjectInfo],
    files: &FileSettings,
    source: &str,
    n: usize,
) -> Result<Vec<Option<Staged>>> {
    let table = format!("_etl_{source}_group_{n:03}");
    let urls: Vec<String> = group.iter().map(|o| literal(&o.url)).collect();
    // (grouped only when no layout has an encoding of its own: the source's, if declared)
    let declared = files.encoding.as_deref();
    let encoding = declared.map_or(String::new(), |e| format!(", encoding = {}", literal(e)));
    engine.execute("drop table if exists _etl_rejects; drop table if exists _etl_rejects_scan;")?;
    engine.execute(&format!(
        "create or replace temp table {} as \
         select * from read_csv([{}], all_varchar = true, header = true, \
         quote = '\"', escape = '\"', filename = '_etl_object', store_rejects = true, \
         rejects_table = '_etl_rejects', rejects_scan = '_etl_rejects_scan'{encoding})",
        ident(&table),
        urls.join(", ")
    ))?;
    let unparsed: Vec<String> = engine
        .query_strings(
            "select distinct scan.file_path from _etl_rejects as r \
             join _etl_rejects_scan as scan using (scan_id, file_id)",
        )?
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    // where each object's rows start in the file, and how many there are
    let parts: HashMap<String, (i64, i64)> = engine
        .query_strings(&format!(
            "select _etl_object, min(rowid), count(*) from temp.{} group by _etl_object",
            ident(&table)
        ))?
        .into_iter()
        .filter_map(|r| {
            let number = |v: &Option<String>| v.as_deref().and_then(|v| v.parse().ok());
            Some((r[0].clone()?, (number(&r[1])?, number(&r[2])?)))
        })
        .collect();
    Ok(group
        .iter()
        .map(|object| {
            if unparsed.contains(&object.url) {
                return None;
            }
            let (first_row, rows) = parts.get(&object.url).copied().unwrap_or((0, 0));
            Some(Staged::Data {
                format: Format::Csv,
                records: Records::Table(table.clone()),
                rejects: None,
                // as for a file read alone in a declared encoding (`fetch_object`)
                decoded_from: declared.filter(|e| !is_utf8(e)).map(str::to_string),
                part: Some(Part {
                    url: object.url.clone(),
                    first_row,
                    rows,
                }),
            })
        })
        .collect())
}

fn fetch_object(
    engine: &Engine,
    object: &ObjectInfo,
    format: Format,
    files: &FileSettings,
    staging: &Path,
    n: usize,
) -> Result<Staged> {
    let records = staging.join(format!("{n:06}.parquet"));
    let rejects = staging.join(format!("{n:06}.rejects.parquet"));
    if format == Format::Json {
        // (JSON is UTF-8 by its standard; DuckDB's JSON reader has no encoding option)
        engine.execute(&format!(
            "copy (select * from read_json({}, format = 'auto')) to {} (format parquet)",
            literal(&object.url),
            literal(&records.to_string_lossy())
        ))?;
        return Ok(Staged::Data {
            format,
            records: Records::Parquet(records),
            rejects: None,
            decoded_from: None,
            part: None,
        });
    }
    let encoding = encoding_of(engine, object, files)?;
    let decoded_from = match encoding.as_deref() {
        Some(declared) => {
            read_csv(engine, object, Some(declared), &records)?;
            (!is_utf8(declared)).then(|| declared.to_string())
        }
        None => {
            read_csv(engine, object, None, &records)?;
            if not_utf8(engine, &records)? {
                // Lines that are not UTF-8 and no line that is UTF-8 beyond ASCII: a
                // Windows-1252 (or Latin-1) export. Read again as such; a line that still
                // makes no sense is quarantined below, with its line number.
                engine.load_extension("encodings")?;
                read_csv(engine, object, Some(WINDOWS_1252), &records)?;
                log::info!("  {}: not UTF-8, read as {WINDOWS_1252}", object.key);
                Some(WINDOWS_1252.to_string())
            } else {
                None
            }
        }
    };
    let mut rejects_file = None;
    if engine.query_i64("select count(*) from _etl_rejects")? > 0 {
        // The reader may report one line several times (once per bad field): one row each.
        engine.execute(&format!(
            "copy (select line, first(csv_line order by column_idx) as raw_line,
                          string_agg(distinct error_type || ': ' || error_message, '; ') as error
                   from _etl_rejects group by line order by line)
             to {} (format parquet)",
            literal(&rejects.to_string_lossy())
        ))?;
        rejects_file = Some(rejects);
    }
    Ok(Staged::Data {
        format,
        records: Records::Parquet(records),
        rejects: rejects_file,
        decoded_from,
        part: None,
    })
}

/// Fails on an encoding DuckDB's CSV reader does not know, before any file is read: every
/// file would be rejected for it.
fn check_encoding(engine: &Engine, source: &str, encoding: &str, staging: &Path) -> Result<()> {
    if !built_in_encoding(encoding) {
        engine.load_extension("encodings")?;
    }
    std::fs::create_dir_all(staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let probe = staging.join("encoding-check.csv");
    std::fs::write(&probe, "a\n1\n")
        .with_context(|| format!("cannot write {}", probe.display()))?;
    let known = engine
        .query_i64(&format!(
            "select count(*) from read_csv({}, header = true, encoding = {})",
            literal(&probe.to_string_lossy()),
            literal(encoding)
        ))
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    if !known {
        bail!(
            "source `{source}`: `encoding = {encoding:?}` is not an encoding DuckDB's CSV reader \
             knows (\"utf-8\", \"utf-16\", \"latin-1\", \"CP1252\", \"shift_jis\" and the others of \
             the encodings extension); no file was read"
        );
    }
    Ok(())
}

/// The encoding a CSV object is declared in: its layout's, else its source's, else none
/// (detected). The layout is known from the header, read first only when a layout declares
/// an encoding of its own.
fn encoding_of(
    engine: &Engine,
    object: &ObjectInfo,
    files: &FileSettings,
) -> Result<Option<String>> {
    if files.layouts.iter().all(|l| l.encoding.is_none()) {
        return Ok(files.encoding.clone());
    }
    let encoding = files
        .encoding
        .as_ref()
        .map_or(String::new(), |e| format!(", encoding = {}", literal(e)));
    let header = engine.columns_of(&format!(
        "select * from read_csv({}, all_varchar = true, header = true, ignore_errors = true{encoding}) limit 0",
        literal(&object.url)
    ))?;
    Ok(best_layout(files, &header)
        .and_then(|l| l.encoding.clone())
        .or_else(|| files.encoding.clone()))
}

/// The encoding a CSV that is not UTF-8 is read in, when the manifest names none.
pub const WINDOWS_1252: &str = "CP1252";

/// Whether DuckDB's CSV reader decodes `encoding` itself; the others are the encodings
/// extension's.
fn built_in_encoding(encoding: &str) -> bool {
    matches!(
        encoding.to_ascii_lowercase().as_str(),
        "utf-8" | "utf-16" | "latin-1"
    )
}

fn is_utf8(encoding: &str) -> bool {
    matches!(
        encoding.to_ascii_lowercase().replace('_', "-").as_str(),
        "utf-8" | "utf8"
    )
}

/// Copies a CSV object's records to Parquet, the lines it cannot parse to `_etl_rejects`.
fn read_csv(
    engine: &Engine,
    object: &ObjectInfo,
    encoding: Option<&str>,
    records: &Path,
) -> Result<()> {
    engine.execute("drop table if exists _etl_rejects; drop table if exists _etl_rejects_scan;")?;
    let encoding = encoding.map_or(String::new(), |e| format!(", encoding = {}", literal(e)));
    engine.execute(&format!(
        "copy (select * from read_csv({}, all_varchar = true, header = true, store_rejects = true, \
         rejects_table = '_etl_rejects', rejects_scan = '_etl_rejects_scan'{encoding})) to {} (format parquet)",
        literal(&object.url),
        literal(&records.to_string_lossy())
    ))
}

/// Whether a CSV read as UTF-8 is rather in a single-byte encoding: some of its lines are
/// not UTF-8, and none of the lines read holds a character beyond ASCII (a UTF-8 file
/// with a few broken lines keeps its good ones as they are).
fn not_utf8(engine: &Engine, records: &Path) -> Result<bool> {
    let invalid = engine
        .query_i64("select count(*) from _etl_rejects where error_type = 'INVALID ENCODING'")?;
    if invalid == 0 {
        return Ok(false);
    }
    let beyond_ascii = engine.query_i64(&format!(
        "select count(*) from read_parquet({}) as t \
         where regexp_matches(concat_ws('', *columns(*)), '[^\\x00-\\x7F]')",
        literal(&records.to_string_lossy())
    ))?;
    Ok(beyond_ascii == 0)
}

pub enum Probe {
    /// The object is there, unchanged: a failed read was the file's fault.
    Same,
    /// The object was replaced meanwhile.
    Changed,
    /// The source itself failed.
    Failed(anyhow::Error),
}

/// Loads what `fetch` staged into `raw.<source>_<table>`, inside the run's transaction.
fn load(
    engine: &Engine,
    name: &str,
    files: &FileSettings,
    fetched: &Staging,
    run_id: &str,
    full_refresh: bool,
) -> Result<ExtractStats> {
    let tables: Vec<String> = files
        .layouts
        .iter()
        .map(|l| raw_table(name, &l.table))
        .collect();
    if full_refresh {
        for table in &tables {
            engine.execute(&format!(
                "drop table if exists {table}; drop table if exists {table}_rejects;"
            ))?;
        }
        engine.execute(&format!(
            "delete from etl.file_ledger where source = {};",
            literal(name)
        ))?;
    }
    let mut missing = Vec::new();
    for (layout, table) in files.layouts.iter().zip(&tables) {
        if !check_raw_table(engine, table, &layout.columns)? {
            missing.push((layout, table));
        }
    }
    let mut stats = ExtractStats {
        listed: fetched.listed,
        skipped_unchanged: fetched.unchanged,
        ..Default::default()
    };
    // A changed object replaces what was read from it before (whatever its layout was).
    if !fetched.objects.is_empty() {
        let keys: Vec<String> = fetched
            .objects
            .iter()
            .map(|s| literal(&s.object.key))
            .collect();
        let keys = format!("[{}]", keys.join(", "));
        for table in tables
            .iter()
            .filter(|t| !missing.iter().any(|(_, m)| m == t))
        {
            engine.execute(&format!(
                "delete from {table} where list_contains({keys}, _object_key); \
                 delete from {table}_rejects where list_contains({keys}, object_key);"
            ))?;
        }
    }
    // Each object's layout and columns; objects loaded the same way go in one insert.
    let preparing = std::time::Instant::now();
    let mut prepared: Vec<Option<std::result::Result<Prepared, String>>> = Vec::new();
    for staged in &fetched.objects {
        let object = &staged.object;
        prepared.push(match &staged.state {
            Staged::Empty | Staged::Rejected(_) => None,
            Staged::Data {
                format,
                records,
                rejects,
                part,
                ..
            } => {
                let data = records_of(records, part.as_ref().map(|p| p.url.as_str()));
                let ready = match choose_layout(engine, files, &data)? {
                    Err(reason) => Err(reason),
                    Ok(layout) => prepare_object(
                        engine,
                        &raw_table(name, &layout.table),
                        name,
                        &layout.columns,
                        object,
                        *format,
                        (records, part.as_ref()),
                        rejects.as_deref(),
                        run_id,
                    )?,
                };
                if let (Err(reason), OnBadFile::Fail) = (&ready, files.on_bad_file) {
                    bail!("bad file {}: {reason} (on_bad_file = \"fail\")", object.url);
                }
                Some(ready)
            }
        });
    }
    // A table created now is created from its first object's rows (see create_raw_table).
    for (layout, table) in missing {
        let first = prepared
            .iter()
            .filter_map(|p| p.as_ref().and_then(|r| r.as_ref().ok()))
            .find(|p| &p.table == table);
        let sample = first.map(|p| {
            let data = records_of(&p.records, p.part.as_ref().map(|(url, _)| url.as_str()));
            format!(
                "(select * from (select {} from {data}) as sample({}))",
                p.selects, p.columns
            )
        });
        create_raw_table(engine, table, &layout.columns, sample.as_deref())?;
    }
    log::debug!(
        "  {} objects matched to their layouts in {:.2}s",
        prepared.len(),
        preparing.elapsed().as_secs_f64()
    );
    let inserting = std::time::Instant::now();
    insert_prepared(engine, &fetched.objects, &prepared, run_id)?;
    log::debug!(
        "  their rows inserted into the raw tables in {:.2}s",
        inserting.elapsed().as_secs_f64()
    );
    // (the scans' tables are loaded: their memory, or their spill files, given back)
    let mut scanned: Vec<&str> = fetched
        .objects
        .iter()
        .filter_map(|o| match &o.state {
            Staged::Data {
                records: Records::Table(table),
                ..
            } => Some(table.as_str()),
            _ => None,
        })
        .collect();
    scanned.sort_unstable();
    scanned.dedup();
    for table in scanned {
        engine.execute(&format!("drop table if exists temp.{}", ident(table)))?;
    }
    let mut outcomes = Vec::new();
    for (staged, ready) in fetched.objects.iter().zip(&prepared) {
        let object = &staged.object;
        let outcome = match (&staged.state, ready) {
            (Staged::Empty, _) => {
                log::warn!("  {}: empty object (0 bytes), nothing to load", object.key);
                stats.loaded += 1;
                Outcome::Empty
            }
            (Staged::Rejected(reason), _) | (_, Some(Err(reason))) => {
                Outcome::Rejected(reason.clone())
            }
            (_, None) => Outcome::Rejected("not staged".into()),
            (_, Some(Ok(ready))) => {
                let rows = ready.records_read;
                let mut rejected_rows = 0;
                if let Some(rejects) = &ready.rejects {
                    let file = literal(&rejects.to_string_lossy());
                    engine.execute(&format!(
                        "insert into {}_rejects select {k}, line, raw_line, error, {run} from read_parquet({file})",
                        ready.table,
                        k = literal(&object.key),
                        run = literal(run_id),
                    ))?;
                    rejected_rows =
                        engine.query_i64(&format!("select count(*) from read_parquet({file})"))?;
                }
                stats.loaded += 1;
                stats.rows += rows;
                stats.rejected_rows += rejected_rows;
                let note = if rejected_rows > 0 {
                    format!(", {rejected_rows} unparsable rows quarantined")
                } else {
                    String::new()
                };
                log::info!("  {}: {rows} rows{note}", object.key);
                let decoded_from = match &staged.state {
                    Staged::Data { decoded_from, .. } => decoded_from.clone(),
                    _ => None,
                };
                Outcome::Loaded {
                    rows,
                    rejected_rows,
                    decoded_from,
                }
            }
        };
        if let Outcome::Rejected(reason) = &outcome {
            stats.rejected += 1;
            log::warn!(
                "  {}: rejected, the other files go on: {reason}",
                object.key
            );
        }
        outcomes.push((object, outcome));
    }
    record(engine, name, &outcomes, run_id)?;
    Ok(stats)
}

/// What reading an object came to, as the ledger records it.
enum Outcome {
    Loaded {
        rows: i64,
        rejected_rows: i64,
        decoded_from: Option<String>,
    },
    Empty,
    Rejected(String),
}

fn record(
    engine: &Engine,
    source: &str,
    outcomes: &[(&ObjectInfo, Outcome)],
    run_id: &str,
) -> Result<()> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let mut keys = Vec::new();
    let mut rows_sql = Vec::new();
    for (object, outcome) in outcomes {
        let (rows, rejected_rows, status, error, encoding) = match outcome {
            Outcome::Loaded {
                rows,
                rejected_rows,
                decoded_from,
            } => (
                *rows,
                *rejected_rows,
                "loaded",
                None,
                decoded_from.as_deref(),
            ),
            Outcome::Empty => (0, 0, "empty", None, None),
            Outcome::Rejected(reason) => (0, 0, "rejected", Some(reason.as_str()), None),
        };
        keys.push(literal(&object.key));
        rows_sql.push(format!(
            "({s}, {k}, {etag}, {size}, try_cast({lm} as timestamptz), {run}, {rows}, {rejected_rows}, {status}, {error}, {encoding})",
            s = literal(source),
            k = literal(&object.key),
            etag = literal(&object.etag),
            size = object.size,
            lm = literal(&object.last_modified),
            run = literal(run_id),
            status = literal(status),
            error = error.map_or("null::varchar".to_string(), literal),
            encoding = encoding.map_or("null::varchar".to_string(), literal),
        ));
    }
    engine.execute(&format!(
        "delete from etl.file_ledger where source = {s} and list_contains([{keys}], object_key);
         insert into etl.file_ledger (source, object_key, etag, size, last_modified, run_id, \
         rows, rejected_rows, status, error, encoding) values {rows};",
        s = literal(source),
        keys = keys.join(", "),
        rows = rows_sql.join(",\n"),
    ))
}

/// The layout a staged file takes: the one whose columns its header holds most of (the
/// first declared on a tie). With one layout, that one (`load_object` then says when none
/// of its columns is there); with several, a file that matches none is rejected by key.
fn choose_layout<'f>(
    engine: &Engine,
    files: &'f FileSettings,
    data: &str,
) -> Result<std::result::Result<&'f Layout, String>> {
    if files.layouts.len() == 1 {
        return Ok(Ok(&files.layouts[0]));
    }
    let actual = engine.columns_of(&format!("select * from {data}"))?;
    Ok(match best_layout(files, &actual) {
        Some(layout) => Ok(layout),
        None => {
            let found: Vec<&str> = actual.iter().map(|(n, _)| n.as_str()).collect();
            let declared: Vec<String> = files
                .layouts
                .iter()
                .map(|l| format!("{} {:?}", l.name, l.columns))
                .collect();
            Err(format!(
                "its header matches no declared layout (found {found:?}; layouts: {})",
                declared.join(", ")
            ))
        }
    })
}

/// The layout whose columns a header (`actual`) holds most of, the first declared on a
/// tie; None when it holds none of any layout's.
fn best_layout<'f>(files: &'f FileSettings, actual: &[(String, String)]) -> Option<&'f Layout> {
    let score = |layout: &Layout| {
        layout
            .columns
            .iter()
            .filter(|want| {
                actual
                    .iter()
                    .any(|(name, _)| name.trim().eq_ignore_ascii_case(want))
            })
            .count()
    };
    files
        .layouts
        .iter()
        .map(|l| (score(l), l))
        .fold(None::<(usize, &Layout)>, |best, (n, l)| match best {
            Some((m, _)) if m >= n => best,
            _ => Some((n, l)),
        })
        .filter(|(n, _)| *n > 0)
        .map(|(_, l)| l)
}

/// A staged object's records as a relation: its Parquet file, or its rows of a file of
/// several objects' (those of the object at `url`).
fn records_of(records: &Records, url: Option<&str>) -> String {
    let file = records.relation();
    match url {
        None => file,
        Some(url) => format!(
            "(select * exclude (_etl_object) from {file} where _etl_object = {})",
            literal(url)
        ),
    }
}

/// How one staged object's records go into its raw table: found columns, drift recorded.
struct Prepared {
    table: String,
    /// The staged file's columns and types: files alike in these are read together.
    schema: String,
    /// The raw table's columns, and the expression of the object's records giving each.
    columns: String,
    selects: String,
    format: &'static str,
    records: Records,
    /// The object's URL and first row when `records` holds several objects' rows.
    part: Option<(String, i64)>,
    rejects: Option<PathBuf>,
    records_read: i64,
}

/// Inserts the prepared objects, those loaded the same way (same table, columns and
/// expressions) in one statement; record numbers follow each file's order, which
/// read_parquet keeps (file_row_number), counted from the object's first row in a file of
/// several objects'.
fn insert_prepared(
    engine: &Engine,
    objects: &[StagedObject],
    prepared: &[Option<std::result::Result<Prepared, String>>],
    run_id: &str,
) -> Result<()> {
    type Key<'a> = (&'a str, &'a str, &'a str, &'a str);
    let mut groups: BTreeMap<Key<'_>, Vec<(&ObjectInfo, &Prepared)>> = BTreeMap::new();
    for (staged, ready) in objects.iter().zip(prepared) {
        if let Some(Ok(ready)) = ready {
            groups
                .entry((&ready.table, &ready.schema, &ready.columns, &ready.selects))
                .or_default()
                .push((&staged.object, ready));
        }
    }
    for ((table, _, columns, selects), members) in groups {
        let mut sources: Vec<&Records> = members.iter().map(|(_, p)| &p.records).collect();
        sources.sort();
        sources.dedup();
        // every record with its number in its file or table (`file_row_number`, from 0) and
        // what it was staged in (`_etl_file`)
        let files: Vec<String> = sources
            .iter()
            .filter_map(|r| match r {
                Records::Parquet(file) => Some(literal(&file.to_string_lossy())),
                Records::Table(_) => None,
            })
            .collect();
        let mut reads: Vec<String> = sources
            .iter()
            .filter_map(|r| match r {
                Records::Table(t) => Some(format!(
                    "select *, rowid as file_row_number, {} as _etl_file from temp.{}",
                    literal(t),
                    ident(t)
                )),
                Records::Parquet(_) => None,
            })
            .collect();
        if !files.is_empty() {
            reads.push(format!(
                "select * from read_parquet([{}], filename = '_etl_file', file_row_number = true, union_by_name = true)",
                files.join(", ")
            ));
        }
        let objects: Vec<String> = members
            .iter()
            .map(|(o, p)| {
                let (part, first_row) = match &p.part {
                    Some((url, first_row)) => (literal(url), *first_row),
                    None => ("null::varchar".to_string(), 0),
                };
                format!(
                    "({}, {part}, {first_row}, {}, {}, {}, {})",
                    literal(&p.records.id()),
                    literal(&o.key),
                    literal(p.format),
                    literal(&o.etag),
                    literal(&o.last_modified)
                )
            })
            .collect();
        // (files of one object have no _etl_object column: union_by_name reads it as NULL)
        let part = if members.iter().any(|(_, p)| p.part.is_some()) {
            "and o.part is not distinct from r._etl_object"
        } else {
            ""
        };
        engine.execute(&format!(
            "insert into {table} (_object_key, _row, _format, _etag, _last_modified, _run_id, _loaded_at, {columns})
             select o.object_key, file_row_number + 1 - o.first_row, o.format, o.etag, try_cast(o.last_modified as timestamptz), {run}, now(), {selects}
             from ({reads}) as r
             join (values {objects}) as o(file, part, first_row, object_key, format, etag, last_modified)
               on o.file = r._etl_file {part}",
            run = literal(run_id),
            reads = reads.join(" union all by name "),
            objects = objects.join(", "),
        ))?;
    }
    Ok(())
}

/// Prepares one staged object: its columns matched to the layout's, drift recorded. The
/// outer error is the engine's (it ends the run); the inner one says why the file is not
/// one of this source's and is recorded as a rejection.
#[allow(clippy::too_many_arguments)]
fn prepare_object(
    engine: &Engine,
    table: &str,
    source: &str,
    columns: &[String],
    object: &ObjectInfo,
    format: Format,
    (records, part): (&Records, Option<&Part>),
    rejects: Option<&Path>,
    run_id: &str,
) -> Result<std::result::Result<Prepared, String>> {
    let data = records_of(records, part.map(|p| p.url.as_str()));
    // Match the file's columns to the expected ones (names compared without case).
    let actual = engine.columns_of(&format!("select * from {data}"))?;
    let find = |want: &str| {
        actual
            .iter()
            .find(|(name, _)| name.trim().eq_ignore_ascii_case(want))
    };
    let as_text = |name: &str, ty: &str| {
        let upper = ty.to_ascii_uppercase();
        if upper == "VARCHAR" {
            ident(name)
        } else if upper == "JSON" {
            // mixed types in one field (a string here, a number there): the text of each
            format!("({} ->> '$')", ident(name))
        } else if upper.starts_with("STRUCT") || upper.starts_with("MAP") || upper.ends_with(']') {
            format!("to_json({})::varchar", ident(name))
        } else {
            format!("{}::varchar", ident(name))
        }
    };
    let mut selects = Vec::new();
    let mut missing = Vec::new();
    for want in columns {
        match find(want) {
            Some((name, ty)) => selects.push(as_text(name, ty)),
            None => {
                missing.push(want.clone());
                selects.push("null".to_string());
            }
        }
    }
    let records_read = match part {
        Some(part) => part.rows,
        None => engine.query_i64(&format!("select count(*) from {data}"))?,
    };
    if missing.len() == columns.len() && (records_read > 0 || rejects.is_none()) {
        let found: Vec<&str> = actual.iter().map(|(n, _)| n.as_str()).collect();
        return Ok(Err(format!(
            "none of the expected columns is in the file (found {found:?}, expected {:?}): \
             not a {} file of this source, or a different layout",
            columns,
            match format {
                Format::Csv => "CSV",
                Format::Json => "JSON",
            }
        )));
    }
    let extra: Vec<&(String, String)> = actual
        .iter()
        .filter(|(name, _)| !columns.iter().any(|c| name.trim().eq_ignore_ascii_case(c)))
        .collect();
    let extra_json = if extra.is_empty() {
        "null".to_string()
    } else {
        let fields: Vec<String> = extra
            .iter()
            .map(|(n, _)| format!("{} := {}", ident(n), ident(n)))
            .collect();
        format!("to_json(struct_pack({}))::varchar", fields.join(", "))
    };
    for (kind, cols) in [
        ("missing_column", missing.clone()),
        (
            "extra_column",
            extra.iter().map(|(n, _)| n.clone()).collect(),
        ),
    ] {
        for col in cols {
            log::warn!(
                "  {}: schema drift: {} `{col}`",
                object.key,
                kind.replace('_', " ")
            );
            engine.execute(&format!(
                "insert into etl.schema_drift values ({}, {}, {}, {}, {})",
                literal(run_id),
                literal(source),
                literal(&object.key),
                literal(kind),
                literal(&col)
            ))?;
        }
    }

    let mut raw_columns: Vec<String> = columns.iter().map(|c| ident(c)).collect();
    raw_columns.push("_extra".into());
    selects.push(extra_json);
    Ok(Ok(Prepared {
        table: table.to_string(),
        schema: format!("{actual:?}"),
        columns: raw_columns.join(", "),
        selects: selects.join(", "),
        format: match format {
            Format::Csv => "csv",
            Format::Json => "json",
        },
        records: records.clone(),
        part: part.map(|p| (p.url.clone(), p.first_row)),
        rejects: rejects.map(Path::to_path_buf),
        records_read,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose copies do what each object's key says: `ok` copies its bytes, `short`
    /// copies fewer bytes than listed (it changed meanwhile), `gone` fails for good (an
    /// object deleted, a local disk full), `flaky` fails as a dropped connection does.
    struct CopyingStore;

    impl Store for CopyingStore {
        fn endpoint(&self) -> String {
            "test store".into()
        }
        fn location(&self) -> String {
            "test://".into()
        }
        fn connect(&self, _: &Engine, _: &str) -> Result<()> {
            Ok(())
        }
        fn list(&self) -> Result<Vec<ObjectInfo>> {
            Ok(Vec::new())
        }
        fn url(&self, key: &str) -> String {
            format!("s3://bucket/{key}")
        }
        fn probe(&self, _: &ObjectInfo) -> Probe {
            Probe::Same
        }
        fn head(&self, _: &ObjectInfo, _: u64) -> Result<Vec<u8>> {
            Ok(Vec::new())
        }
        fn download(&self, object: &ObjectInfo, to: &Path) -> Result<bool> {
            let bytes = vec![b'x'; object.size as usize];
            match object.key.split('.').next().unwrap_or_default() {
                "ok" => std::fs::write(to, &bytes)?,
                "short" => std::fs::write(to, &bytes[1..])?,
                "gone" => {
                    std::fs::write(to, &bytes[..1])?;
                    bail!("NoSuchKey: {}", object.key)
                }
                "flaky" => {
                    return Err(anyhow::Error::new(crate::retry::Transient(
                        "connection reset".into(),
                    )))
                }
                other => panic!("{other}: not to be copied"),
            }
            Ok(true)
        }
    }

    fn object(key: &str, size: u64) -> (ObjectInfo, bool) {
        let info = ObjectInfo {
            key: key.into(),
            etag: "e".into(),
            size,
            last_modified: "2026-01-01 00:00:00+00".into(),
            url: CopyingStore.url(key),
        };
        (info, false)
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn an_object_that_cannot_be_copied_is_read_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let copies_dir = dir.path().join("objects");
        let objects = [
            object("ok.csv", 10),
            object("short.csv", 10),
            object("gone.ndjson", 10),
            // neither an empty object nor one of no known format is copied
            object("ok.empty.csv", 0),
            object("unknown.parquet", 10),
        ];
        let reads = copies(&CopyingStore, &objects, &copies_dir).unwrap();
        let read_from: Vec<(&str, Option<&str>)> = reads
            .iter()
            .map(|r| (r.read.url.as_str(), r.url.as_deref()))
            .collect();
        let copy = copies_dir.join("000000-ok.csv");
        assert_eq!(
            read_from,
            [
                (copy.to_str().unwrap(), Some("s3://bucket/ok.csv")),
                ("s3://bucket/short.csv", None),
                ("s3://bucket/gone.ndjson", None),
                ("s3://bucket/ok.empty.csv", None),
                ("s3://bucket/unknown.parquet", None),
            ]
        );
        // the copies that were not kept are gone; messages name the object, not its copy
        assert_eq!(files_in(&copies_dir), ["000000-ok.csv"]);
        assert_eq!(
            reads[0].named(&format!("cannot read {}, line 3", copy.display())),
            "cannot read s3://bucket/ok.csv, line 3"
        );
    }

    #[test]
    fn a_transient_fault_while_copying_fails_the_fetch_so_it_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let objects = [object("ok.csv", 10), object("flaky.csv", 10)];
        let err = copies(&CopyingStore, &objects, &dir.path().join("objects"))
            .err()
            .expect("a transient fault fails the copies");
        assert!(crate::retry::is_transient(&err), "{err:#}");
        assert_eq!(
            format!("{err:#}"),
            "copying s3://bucket/flaky.csv failed: connection reset (transient)"
        );
    }

    #[test]
    fn file_type_comes_from_the_extension() {
        assert_eq!(format_of("a/b/providers.CSV"), Some(Format::Csv));
        assert_eq!(format_of("x.ndjson"), Some(Format::Json));
        assert_eq!(format_of("x.json.gz"), Some(Format::Json));
        assert_eq!(format_of("x.parquet"), None);
    }
}
