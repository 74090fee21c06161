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
