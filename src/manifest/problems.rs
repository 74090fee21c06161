//! Problems in a manifest, each with its place, and how they are shown: the file, line and
//! column, the line itself with a caret, a hint. Every problem is collected before anything
//! is reported.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use super::wire::ManifestWire;
use super::{nearest, Manifest};

/// Everything wrong with one manifest.
#[derive(Debug)]
pub struct ManifestError {
    pub path: PathBuf,
    pub(super) text: String,
    pub problems: Vec<Problem>,
    /// The files a problem may point into instead of `text` (a manifest that extends a
    /// base: the tenant's file and the base's), by [`Problem::file`].
    pub(super) files: Vec<(PathBuf, String)>,
}

impl Manifest {
    /// An error that points into this manifest's text, for problems found after parsing
    /// (into the file the user wrote, when it extends a base).
    pub fn error(&self, problems: Vec<Problem>) -> ManifestError {
        let error = ManifestError {
            path: self.path.clone(),
            text: self.text.clone(),
            problems,
            files: Vec::new(),
        };
        match &self.origins {
            Some((tenant, base)) => error.relocate(tenant, base),
            None => error,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub span: Option<Range<usize>>,
    pub message: String,
    pub help: Option<String>,
    /// The file the span is in, from [`ManifestError::files`]; None: the error's own text.
    pub file: Option<usize>,
}

impl Problem {
    pub fn new(span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        Problem {
            span,
            message: message.into(),
            help: None,
            file: None,
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

    /// Points each problem of a merged manifest (a tenant's over its base) into the file
    /// that holds what it is about: the tenant's when it wrote that key, else the base's.
    /// A problem whose place is in neither keeps pointing into the merged text.
    pub(super) fn relocate(
        mut self,
        tenant: &(PathBuf, String),
        base: &(PathBuf, String),
    ) -> ManifestError {
        let merged = spans(&self.text);
        let in_tenant = spans(&tenant.1);
        let in_base = spans(&base.1);
        self.files = vec![tenant.clone(), base.clone()];
        for problem in &mut self.problems {
            let Some(span) = problem.span.clone() else {
                continue;
            };
            // the innermost key or value the problem points at
            let Some((path, is_key, at)) = merged
                .iter()
                .filter(|(_, _, s)| s.start <= span.start && span.start < s.end.max(s.start + 1))
                .min_by_key(|(_, _, s)| s.end - s.start)
            else {
                continue;
            };
            let offset = span.start - at.start;
            let len = span.end.saturating_sub(span.start);
            for (file, found) in [(0, &in_tenant), (1, &in_base)] {
                if let Some((_, _, s)) = found.iter().find(|(p, k, _)| p == path && k == is_key) {
                    let start = (s.start + offset).min(s.end);
                    problem.span = Some(start..(start + len).min(s.end.max(start)));
                    problem.file = Some(file);
                    break;
                }
            }
        }
        self
    }
}

/// Where each key and value of a TOML text is: its path (table keys, array indices), whether
/// the span is the key's or the value's, and the span.
type Spans = Vec<(Vec<String>, bool, Range<usize>)>;

fn spans(text: &str) -> Spans {
    let mut out = Vec::new();
    if let Ok(doc) = toml_edit::Document::parse(text) {
        if let Some(table) = doc.as_item().as_table() {
            table_spans(table, &[], &mut out);
        }
    }
    out
}

fn table_spans(table: &toml_edit::Table, path: &[String], out: &mut Spans) {
    for (key, item) in table.iter() {
        let mut here = path.to_vec();
        here.push(key.to_string());
        if let Some(span) = table.key(key).and_then(|k| k.span()) {
            out.push((here.clone(), true, span));
        }
        match item {
            toml_edit::Item::Table(t) => table_spans(t, &here, out),
            toml_edit::Item::ArrayOfTables(tables) => {
                for (i, t) in tables.iter().enumerate() {
                    let mut at = here.clone();
                    at.push(i.to_string());
                    table_spans(t, &at, out);
                }
            }
            toml_edit::Item::Value(v) => value_spans(v, &here, out),
            toml_edit::Item::None => {}
        }
    }
}

fn value_spans(value: &toml_edit::Value, path: &[String], out: &mut Spans) {
    if let Some(span) = value.span() {
        out.push((path.to_vec(), false, span));
    }
    if let Some(inline) = value.as_inline_table() {
        for (key, v) in inline.iter() {
            let mut here = path.to_vec();
            here.push(key.to_string());
            if let Some(span) = inline.key(key).and_then(|k| k.span()) {
                out.push((here.clone(), true, span));
            }
            value_spans(v, &here, out);
        }
    } else if let Some(array) = value.as_array() {
        for (i, v) in array.iter().enumerate() {
            let mut here = path.to_vec();
            here.push(i.to_string());
            value_spans(v, &here, out);
        }
    }
}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
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
            // the file the problem is in: the tenant's or the base's, else the merged text
            let (path, text) = match problem.file.and_then(|i| self.files.get(i)) {
                Some((path, text)) => (path.display().to_string(), text.as_str()),
                None => (self.path.display().to_string(), self.text.as_str()),
            };
            if let Some(span) = &problem.span {
                let (line, col) = line_col(text, span.start);
                let line_text = text.lines().nth(line - 1).unwrap_or("");
                let width = text
                    .get(span.clone())
                    .and_then(|s| s.lines().next())
                    .map_or(1, |s| s.chars().count().max(1));
                let gutter = line.to_string().len();
                writeln!(f, "{:gutter$}--> {path}:{line}:{col}", "")?;
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
                writeln!(f, " --> {path}")?;
            }
            if let Some(help) = &problem.help {
                writeln!(f, "help: {help}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ManifestError {}

/// Deserializes, and on an error blanks the offending line and tries again, so one
/// report lists every unknown key and wrong type rather than only the first.
/// Blanking keeps byte offsets, so every span still points into the original text.
pub(super) fn deserialize_collecting(text: &str) -> (Option<ManifestWire>, Vec<Problem>) {
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

pub(super) fn problem_from_toml(err: &toml::de::Error) -> Problem {
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
