//! Each source kind's part of the manifest: the keys it accepts and how they compile into
//! its settings. Adding a kind adds one line to `KINDS` and one function here (or in a
//! module of its own), beside its connector in src/sources/.

use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;

use super::compile::Resolve;
use super::wire::*;
use super::*;

/// A source kind's name, the keys it accepts besides `kind`, and how they compile.
type Kind = (
    &'static str,
    &'static [&'static str],
    fn(&mut Cx<'_>) -> Option<SourceKind>,
);

/// The file-based kinds' shared keys.
const FILE_KEYS: [&str; 6] = [
    "table",
    "columns",
    "on_bad_file",
    "encoding",
    "layouts",
    "map",
];

const KINDS: &[Kind] = &[
    (
        "postgres",
        &[
            "host",
            "port",
            "database",
            "user",
            "password",
            "schema",
            "tables",
            "cursor",
            "keys",
            "lookback_seconds",
            "snapshot",
            "detect_deletes",
            "map",
        ],
        postgres,
    ),
    (
        "s3",
        &[
            "endpoint",
            "region",
            "bucket",
            "prefix",
            "access_key_id",
            "secret_access_key",
            "use_ssl",
            "url_style",
            FILE_KEYS[0],
            FILE_KEYS[1],
            FILE_KEYS[2],
            FILE_KEYS[3],
            FILE_KEYS[4],
            FILE_KEYS[5],
        ],
        s3,
    ),
    (
        "folder",
        &[
            "path",
            "settle_seconds",
            FILE_KEYS[0],
            FILE_KEYS[1],
            FILE_KEYS[2],
            FILE_KEYS[3],
            FILE_KEYS[4],
            FILE_KEYS[5],
        ],
        folder,
    ),
];

/// One source being compiled: its name, what it holds as written, and where problems go.
pub(super) struct Cx<'a> {
    name: &'a str,
    kind: &'a str,
    wire: &'a SourceWire,
    /// The manifest's folder, which relative paths are resolved against.
    base: &'a Path,
    span: std::ops::Range<usize>,
    resolve: &'a Resolve<'a>,
    problems: &'a mut Vec<Problem>,
}

impl Cx<'_> {
    fn key(&self, k: &str) -> String {
        format!("sources.{}.{k}", self.name)
    }

    fn resolve(&mut self, v: &Spanned<String>, k: &str) -> Option<String> {
        let key = self.key(k);
        (self.resolve)(v, &key, self.problems)
    }

    fn required(&mut self, v: &Option<Spanned<String>>, k: &str) -> Option<String> {
        match v {
            Some(v) => self.resolve(v, k),
            None => {
                let message = format!("source `{}` ({}) needs `{k}`", self.name, self.kind);
                self.problems
                    .push(Problem::new(Some(self.span.clone()), message));
                None
            }
        }
    }

    fn optional(&mut self, v: &Option<Spanned<String>>, k: &str, default: &str) -> String {
        v.as_ref()
            .and_then(|v| self.resolve(v, k))
            .unwrap_or_else(|| default.to_string())
    }

    fn names(&mut self, v: &Option<Spanned<Vec<Spanned<String>>>>, k: &str) -> Vec<String> {
        let Some(list) = v else {
            let message = format!("source `{}` ({}) needs `{k}`", self.name, self.kind);
            self.problems
                .push(Problem::new(Some(self.span.clone()), message));
            return Vec::new();
        };
        if list.get_ref().is_empty() {
            let message = format!("`{}` is empty", self.key(k));
            self.problems.push(Problem::new(Some(list.span()), message));
        }
        let mut names = Vec::new();
        for item in list.get_ref() {
            let s = item.get_ref();
            if is_identifier(s) {
                names.push(s.clone());
            } else {
                let message = format!(
                    "`{}`: {s:?} is not a plain name (letters, digits, `_`)",
                    self.key(k)
                );
                self.problems.push(Problem::new(Some(item.span()), message));
            }
        }
        names
    }
}

pub(super) fn compile_source(
    name: &str,
    source: &Spanned<SourceWire>,
    base: &Path,
    resolve: &Resolve<'_>,
    problems: &mut Vec<Problem>,
) -> Option<Source> {
    let w = source.get_ref();
    let kind = w.kind.get_ref().as_str();
    if !is_identifier(name) {
        problems.push(Problem::new(
            Some(source.span()),
            format!("source name `{name}` must be letters, digits and `_` (it names raw tables)"),
        ));
    }
    let Some((_, accepted, compile)) = KINDS.iter().find(|(k, _, _)| *k == kind) else {
        let kinds: Vec<&str> = KINDS.iter().map(|(k, _, _)| *k).collect();
        let quoted: Vec<String> = kinds.iter().map(|k| format!("{k:?}")).collect();
        let expected = match quoted.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        let mut p = Problem::new(
            Some(w.kind.span()),
            format!("source `{name}` has unknown kind {kind:?}: expected {expected}"),
        );
        if let Some(near) = nearest(kind, kinds) {
            p = p.help(format!("did you mean \"{near}\"?"));
        }
        problems.push(p);
        return None;
    };
    for k in w.present() {
        if !accepted.contains(&k) {
            problems.push(Problem::new(
                Some(w.kind.span()),
                format!("`sources.{name}.{k}` does not apply to a {kind} source"),
            ));
        }
    }
    let mut cx = Cx {
        name,
        kind,
        wire: w,
        base,
        span: source.span(),
        resolve,
        problems,
    };
    Some(Source {
        maps: BTreeMap::new(),
        name: name.to_string(),
        kind: compile(&mut cx)?,
    })
}

fn postgres(cx: &mut Cx<'_>) -> Option<SourceKind> {
    let w = cx.wire;
    let host = cx.required(&w.host, "host");
    let port = match &w.port {
        None => Some(5432),
        Some(p) => cx.resolve(p, "port").and_then(|s| match s.parse::<u16>() {
            Ok(port) if port > 0 => Some(port),
            _ => {
                cx.problems.push(Problem::new(
                    Some(p.span()),
                    format!("`{}`: {s:?} is not a port number (1-65535)", cx.key("port")),
                ));
                None
            }
        }),
    };
    let database = cx.required(&w.database, "database");
    let user = cx.required(&w.user, "user");
    let password = cx.required(&w.password, "password");
    let schema = cx.optional(&w.schema, "schema", "public");
    let tables = cx.names(&w.tables, "tables");
    let snapshot: Vec<String> = match &w.snapshot {
        None => Vec::new(),
        Some(list) => list
            .get_ref()
            .iter()
            .filter_map(|t| {
                if tables.contains(t.get_ref()) {
                    Some(t.get_ref().clone())
                } else {
                    cx.problems.push(Problem::new(
                        Some(t.span()),
                        format!(
                            "`{}`: `{}` is not one of the source's tables",
                            cx.key("snapshot"),
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
                cx.problems.push(Problem::new(
                    Some(k.span()),
                    format!(
                        "`{}`: `{table}` is not one of the source's tables",
                        cx.key("keys")
                    ),
                ));
            }
            keys.insert(table.clone(), column.get_ref().clone());
        }
    }
    if cursor.is_some() {
        for table in tables.iter().filter(|t| !snapshot.contains(t)) {
            if !keys.contains_key(table) {
                cx.problems.push(
                    Problem::new(
                        w.cursor.as_ref().map(|c| c.span()),
                        format!("table `{table}` is read incrementally (`cursor`) but `{}` names no key for it", cx.key("keys")),
                    )
                    .help(format!("add `keys = {{ {table} = \"{table}_id\" }}`, or list it in `snapshot` to read it whole")),
                );
            }
        }
    }
    Some(SourceKind::Postgres(PostgresSource {
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
    }))
}

fn s3(cx: &mut Cx<'_>) -> Option<SourceKind> {
    let w = cx.wire;
    let endpoint = cx.required(&w.endpoint, "endpoint");
    let region = cx.optional(&w.region, "region", "us-east-1");
    let bucket = cx.required(&w.bucket, "bucket");
    let prefix = cx.optional(&w.prefix, "prefix", "");
    let access_key_id = cx.required(&w.access_key_id, "access_key_id");
    let secret_access_key = cx.required(&w.secret_access_key, "secret_access_key");
    let url_style = match w
        .url_style
        .as_ref()
        .map(|s| (s.get_ref().as_str(), s.span()))
    {
        None | Some(("path", _)) => UrlStyle::Path,
        Some(("vhost", _)) => UrlStyle::Vhost,
        Some((other, span)) => {
            cx.problems.push(Problem::new(
                Some(span),
                format!(
                    "`{}`: {other:?} is not a URL style: expected \"path\" or \"vhost\"",
                    cx.key("url_style")
                ),
            ));
            UrlStyle::Path
        }
    };
    let (table, columns, on_bad_file, encoding, layouts) = file_settings(cx);
    Some(SourceKind::S3(S3Source {
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
        encoding,
        layouts,
    }))
}

fn folder(cx: &mut Cx<'_>) -> Option<SourceKind> {
    let w = cx.wire;
    let path = cx.required(&w.path, "path");
    let settle = match &w.settle_seconds {
        None => std::time::Duration::from_secs(1),
        Some(v) if v.get_ref().is_finite() && *v.get_ref() >= 0.0 => {
            std::time::Duration::from_secs_f64(*v.get_ref())
        }
        Some(v) => {
            cx.problems.push(Problem::new(
                Some(v.span()),
                format!(
                    "`{}` must be a number of seconds, 0 or more",
                    cx.key("settle_seconds")
                ),
            ));
            std::time::Duration::from_secs(1)
        }
    };
    let (table, columns, on_bad_file, encoding, layouts) = file_settings(cx);
    Some(SourceKind::Folder(FolderSource {
        path: normalize(&cx.base.join(path?)),
        settle,
        table,
        columns,
        on_bad_file,
        encoding,
        layouts,
    }))
}

/// What every file-based kind has: the raw table, the columns or layouts, what a bad file
/// does.
#[allow(clippy::type_complexity)]
fn file_settings(cx: &mut Cx<'_>) -> (String, Vec<String>, OnBadFile, Option<String>, Vec<Layout>) {
    let w = cx.wire;
    // checked against DuckDB's readers when the source is read (`etl validate` too)
    let encoding = w.encoding.as_ref().map(|e| e.get_ref().trim().to_string());
    if let Some(e) = &w.encoding {
        if e.get_ref().trim().is_empty() {
            cx.problems.push(Problem::new(
                Some(e.span()),
                format!(
                    "`{}` is empty: name the files' encoding (\"CP1252\", \"latin-1\", …) or leave the key out to detect it",
                    cx.key("encoding")
                ),
            ));
        }
    }
    let on_bad_file = match w
        .on_bad_file
        .as_ref()
        .map(|s| (s.get_ref().as_str(), s.span()))
    {
        None | Some(("skip", _)) => OnBadFile::Skip,
        Some(("fail", _)) => OnBadFile::Fail,
        Some((other, span)) => {
            cx.problems.push(Problem::new(
                Some(span),
                format!(
                    "`{}`: {other:?} is not a choice: expected \"skip\" or \"fail\"",
                    cx.key("on_bad_file")
                ),
            ));
            OnBadFile::Skip
        }
    };
    let table = cx.optional(&w.table, "table", "provider");
    if !is_identifier(&table) {
        cx.problems.push(Problem::new(
            w.table.as_ref().map(|t| t.span()),
            format!("`{}`: {table:?} is not a plain name", cx.key("table")),
        ));
    }
    let layouts: Vec<Layout> = match (&w.layouts, &w.columns) {
        (Some(layouts), columns) => {
            if let Some(c) = columns {
                cx.problems.push(Problem::new(
                    Some(c.span()),
                    format!(
                        "`{}`: with `layouts`, each layout lists its own columns",
                        cx.key("columns")
                    ),
                ));
            }
            if let Some(m) = &w.map {
                cx.problems.push(Problem::new(
                    Some(m.span()),
                    format!(
                        "`{}`: with `layouts`, each layout has its own map",
                        cx.key("map")
                    ),
                ));
            }
            layouts
                .get_ref()
                .iter()
                .map(|(layout, l)| {
                    let l_key = format!("{}.{layout}", cx.key("layouts"));
                    let table = l
                        .get_ref()
                        .table
                        .as_ref()
                        .map_or(layout.clone(), |t| t.get_ref().clone());
                    if !is_identifier(&table) || !is_identifier(layout) {
                        cx.problems.push(Problem::new(
                            Some(l.span()),
                            format!("`{l_key}`: layout and table names are plain names"),
                        ));
                    }
                    let columns = match &l.get_ref().columns {
                        Some(list) => list.get_ref().iter().map(|c| c.get_ref().clone()).collect(),
                        None => {
                            cx.problems.push(Problem::new(
                                Some(l.span()),
                                format!("`{l_key}` needs `columns`: the columns files of this layout have"),
                            ));
                            Vec::new()
                        }
                    };
                    Layout {
                        name: layout.clone(),
                        table,
                        columns,
                        encoding: l
                            .get_ref()
                            .encoding
                            .as_ref()
                            .map(|e| e.get_ref().trim().to_string())
                            .filter(|e| !e.is_empty()),
                    }
                })
                .collect()
        }
        (None, Some(list)) => vec![Layout {
            name: table.clone(),
            table: table.clone(),
            columns: list.get_ref().iter().map(|c| c.get_ref().clone()).collect(),
            encoding: None,
        }],
        (None, None) => {
            cx.problems.push(Problem::new(
                Some(cx.span.clone()),
                format!("source `{}` ({}) needs `columns` (or `layouts`): the columns its files are expected to have", cx.name, cx.kind),
            ));
            vec![Layout {
                name: table.clone(),
                table: table.clone(),
                columns: Vec::new(),
                encoding: None,
            }]
        }
    };
    let columns = layouts[0].columns.clone();
    (table, columns, on_bad_file, encoding, layouts)
}
