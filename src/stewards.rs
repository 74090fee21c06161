//! Steward decisions: what a data steward decided about provider identity, kept as data in
//! a tenant-owned CSV (`identity.decisions`, docs/data-quality.md#steward-decisions):
//!
//! ```text
//! decision,provider_id,other_provider_id,npi,name,note
//! merge,11,19,,,Jane S. is Jane Smith (the clinic confirmed)
//! keep_apart,5,13,,,John Doe and Johnathan Doe are two people
//! npi_belongs_to,,,1934567896,Alan Smithee,NPPES lists him
//! ```
//!
//! - `merge`: two providers are one. The group of providers merged together keeps its lowest
//!   id; the others are never given again. Their rows are clustered under `steward:<id>`.
//! - `keep_apart`: two providers are not one person; the pair is no possible duplicate.
//! - `npi_belongs_to`: when the rows of this NPI name different people, the published
//!   record is that of a row with this name (before the trust order).
//!
//! The file is checked before a run starts: a line that cannot be read, or that names a
//! provider id or NPI the lake does not know, stops the run with the file and line.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::engine::{literal, Engine};
use crate::manifest::Manifest;
use crate::run::UsageError;

/// The columns of a decisions file.
pub const COLUMNS: [&str; 6] = [
    "decision",
    "provider_id",
    "other_provider_id",
    "npi",
    "name",
    "note",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Merge(i64, i64),
    KeepApart(i64, i64),
    NpiBelongsTo { npi: String, name: String },
}

/// One line of the file.
#[derive(Debug, Clone)]
pub struct Line {
    pub line: u64,
    pub decision: Decision,
    pub note: String,
}

/// Reads the manifest's decisions file (none: no decisions). A line that cannot be read is
/// an error naming the file and line.
pub fn read(manifest: &Manifest) -> Result<Vec<Line>> {
    match &manifest.identity.decisions {
        None => Ok(Vec::new()),
        Some(file) => parse(file),
    }
}

fn parse(file: &Path) -> Result<Vec<Line>> {
    let at = |line: u64, what: String| -> anyhow::Error {
        UsageError(format!(
            "{}:{line}: {what}; the run did not start",
            file.display()
        ))
        .into()
    };
    let text = std::fs::read(file)
        .with_context(|| format!("cannot read the steward decisions {}", file.display()))?;
    // the line a record starts on, from its byte offset (blank lines before it skipped)
    let line_at = |byte: u64| -> u64 {
        let mut at = byte as usize;
        let mut line = 1 + text[..at.min(text.len())]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64;
        while at < text.len() && (text[at] == b'\n' || text[at] == b'\r') {
            line += u64::from(text[at] == b'\n');
            at += 1;
        }
        line
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_slice());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| at(1, format!("the header cannot be read ({e})")))?
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let column = |name: &str| header.iter().position(|h| h == name);
    let missing: Vec<&str> = COLUMNS
        .iter()
        .copied()
        .filter(|c| column(c).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(at(
            1,
            format!(
                "the header lacks {} (expected {})",
                missing.join(", "),
                COLUMNS.join(",")
            ),
        ));
    }
    let mut lines = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| line_at(p.byte()));
            at(line, format!("the line cannot be read ({e})"))
        })?;
        let line = record.position().map_or(0, |p| line_at(p.byte()));
        let get = |name: &str| {
            column(name)
                .and_then(|i| record.get(i))
                .unwrap_or("")
                .to_string()
        };
        if record.iter().all(str::is_empty) {
            continue;
        }
        let id = |name: &str| -> Result<i64> {
            let value = get(name);
            value.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
                at(
                    line,
                    format!(
                        "`{name}` must be a provider id (a positive whole number), not {value:?}"
                    ),
                )
            })
        };
        let decision = match get("decision").as_str() {
            "merge" | "keep_apart" => {
                let (a, b) = (id("provider_id")?, id("other_provider_id")?);
                if a == b {
                    return Err(at(line, format!("provider {a} is named twice")));
                }
                if get("decision") == "merge" {
                    Decision::Merge(a, b)
                } else {
                    Decision::KeepApart(a, b)
                }
            }
            "npi_belongs_to" => {
                let npi = get("npi");
                if npi.len() != 10 || !npi.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(at(line, format!("`npi` must be 10 digits, not {npi:?}")));
                }
                let name = get("name");
                if name.is_empty() {
                    return Err(at(line, "`name` is empty: whose NPI is it?".to_string()));
                }
                Decision::NpiBelongsTo { npi, name }
            }
            other => {
                return Err(at(
                    line,
                    format!(
                        "{other:?} is not a decision: expected merge, keep_apart or npi_belongs_to"
                    ),
                ))
            }
        };
        lines.push(Line {
            line,
            decision,
            note: get("note"),
        });
    }
    // one owner per NPI
    let mut owners: BTreeMap<&str, u64> = BTreeMap::new();
    for l in &lines {
        if let Decision::NpiBelongsTo { npi, .. } = &l.decision {
            if let Some(first) = owners.insert(npi, l.line) {
                return Err(at(
                    l.line,
                    format!("NPI {npi} is given an owner on line {first} already"),
                ));
            }
        }
    }
    // a pair both merged and kept apart cannot be both
    for l in &lines {
        if let Decision::KeepApart(a, b) = l.decision {
            let groups = merge_groups(&lines);
            if groups.get(&a).is_some_and(|g| Some(g) == groups.get(&b)) {
                return Err(at(
                    l.line,
                    format!("providers {a} and {b} are kept apart here and merged by another line"),
                ));
            }
        }
    }
    Ok(lines)
}

/// Each merged provider id and the id its group keeps (the lowest).
pub fn merge_groups(lines: &[Line]) -> BTreeMap<i64, i64> {
    let mut kept: BTreeMap<i64, i64> = BTreeMap::new();
    fn root(kept: &BTreeMap<i64, i64>, mut id: i64) -> i64 {
        while let Some(&up) = kept.get(&id) {
            if up == id {
                break;
            }
            id = up;
        }
        id
    }
    for l in lines {
        if let Decision::Merge(a, b) = l.decision {
            kept.entry(a).or_insert(a);
            kept.entry(b).or_insert(b);
            let (ra, rb) = (root(&kept, a), root(&kept, b));
            let (low, high) = (ra.min(rb), ra.max(rb));
            kept.insert(high, low);
        }
    }
    let ids: Vec<i64> = kept.keys().copied().collect();
    ids.into_iter().map(|id| (id, root(&kept, id))).collect()
}

/// Fails, before the run starts, on a decision naming a provider id or NPI the lake does
/// not know.
pub fn check(engine: &Engine, manifest: &Manifest, lines: &[Line]) -> Result<()> {
    let Some(file) = &manifest.identity.decisions else {
        return Ok(());
    };
    let unknown = |line: u64, what: String| -> anyhow::Error {
        UsageError(format!(
            "{}:{line}: {what}, which tenant `{}` does not know (etl.provider_keys); the run did not start",
            file.display(),
            manifest.tenant
        ))
        .into()
    };
    for l in lines {
        match &l.decision {
            Decision::Merge(a, b) | Decision::KeepApart(a, b) => {
                for id in [a, b] {
                    let known = engine.query_i64(&format!(
                        "select count(*) from etl.provider_keys where provider_id = {id}"
                    ))?;
                    if known == 0 {
                        return Err(unknown(l.line, format!("provider {id}")));
                    }
                }
            }
            Decision::NpiBelongsTo { npi, .. } => {
                let known = engine.query_i64(&format!(
                    "select count(*) from etl.provider_keys where key = {}",
                    literal(&format!("npi:{npi}"))
                ))?;
                if known == 0 {
                    return Err(unknown(l.line, format!("NPI {npi}")));
                }
            }
        }
    }
    Ok(())
}

/// Makes the decisions visible to the models, as temporary tables:
///   temp.steward_keys       key -> the cluster key of its merged group (`steward:<id>`)
///   temp.steward_apart      (provider_a, provider_b), provider_a < provider_b
///   temp.steward_npi_names  npi, name, line
/// (before the macros, which read them)
/// registers each merged group's key with the id it keeps, and records the decisions in
/// force in etl.steward_decisions.
pub fn load(engine: &Engine, manifest: &Manifest, lines: &[Line], run_id: &str) -> Result<()> {
    let groups = merge_groups(lines);
    let merges: Vec<String> = groups
        .iter()
        .map(|(id, kept)| format!("({id}, {kept})"))
        .collect();
    let apart: Vec<String> = lines
        .iter()
        .filter_map(|l| match l.decision {
            Decision::KeepApart(a, b) => Some(format!("({}, {})", a.min(b), a.max(b))),
            _ => None,
        })
        .collect();
    let npi_names: Vec<String> = lines
        .iter()
        .filter_map(|l| match &l.decision {
            Decision::NpiBelongsTo { npi, name } => {
                Some(format!("({}, {}, {})", literal(npi), literal(name), l.line))
            }
            _ => None,
        })
        .collect();
    let values = |rows: &[String], empty: &str| {
        if rows.is_empty() {
            format!("select {empty} limit 0")
        } else {
            format!("select * from (values {})", rows.join(", "))
        }
    };
    // (without merges, the key map of every provider is not read, and no key is added)
    let (keys, merged_keys) = if merges.is_empty() {
        (
            "select ''::varchar as key, ''::varchar as cluster_key limit 0",
            String::new(),
        )
    } else {
        (
            "select keys.key, 'steward:' || merges.kept_id as cluster_key
             from etl.provider_keys as keys
             join temp.steward_merges as merges on merges.provider_id = keys.provider_id",
            format!(
                "insert into etl.provider_keys (key, provider_id, first_run_id)
                 select distinct 'steward:' || kept_id, kept_id, {}
                 from temp.steward_merges
                 anti join etl.provider_keys as known on known.key = 'steward:' || kept_id;",
                literal(run_id)
            ),
        )
    };
    engine.execute(&format!(
        "create or replace temp table steward_merges as \
         select col0::integer as provider_id, col1::integer as kept_id from ({});
         create or replace temp table steward_keys as {keys};
         {merged_keys}
         create or replace temp table steward_apart as
         select col0::integer as provider_a, col1::integer as provider_b from ({});
         create or replace temp table steward_npi_names as
         select col0::varchar as npi, col1::varchar as name, col2::bigint as line from ({});",
        values(&merges, "1 as col0, 1 as col1"),
        values(&apart, "1 as col0, 1 as col1"),
        values(&npi_names, "'' as col0, '' as col1, 1 as col2"),
    ))?;
    audit(engine, manifest, lines, run_id)
}

/// etl.steward_decisions: every decision with the run it came into force and the run it
/// was withdrawn (removed from the file) in.
fn audit(engine: &Engine, manifest: &Manifest, lines: &[Line], run_id: &str) -> Result<()> {
    let file = manifest
        .identity
        .decisions
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_default();
    let rows: Vec<String> = lines
        .iter()
        .map(|l| {
            let (kind, a, b, npi, name) = match &l.decision {
                Decision::Merge(a, b) => ("merge", Some(*a), Some(*b), None, None),
                Decision::KeepApart(a, b) => ("keep_apart", Some(*a), Some(*b), None, None),
                Decision::NpiBelongsTo { npi, name } => (
                    "npi_belongs_to",
                    None,
                    None,
                    Some(npi.as_str()),
                    Some(name.as_str()),
                ),
            };
            let opt_id = |v: Option<i64>| v.map_or("null".to_string(), |v| v.to_string());
            let opt_text = |v: Option<&str>| v.map_or("null".to_string(), literal);
            format!(
                "({}, {}, {}, {}, {}, {}, {})",
                l.line,
                literal(kind),
                opt_id(a),
                opt_id(b),
                opt_text(npi),
                opt_text(name),
                literal(&l.note)
            )
        })
        .collect();
    let current = if rows.is_empty() {
        "select null::bigint as line, null::varchar as decision, null::integer as provider_id, \
         null::integer as other_provider_id, null::varchar as npi, null::varchar as name, \
         null::varchar as note limit 0"
            .to_string()
    } else {
        format!(
            "select * from (values {}) as t(line, decision, provider_id, other_provider_id, npi, name, note)",
            rows.join(", ")
        )
    };
    engine.execute(&format!(
        "create or replace temp table steward_current as {current};
         -- withdrawn: in force before, no longer in the file
         update etl.steward_decisions as d set withdrawn_run_id = {run}
         where withdrawn_run_id is null
           and not exists (
               select 1 from temp.steward_current as c
               where c.decision = d.decision
                 and c.provider_id is not distinct from d.provider_id
                 and c.other_provider_id is not distinct from d.other_provider_id
                 and c.npi is not distinct from d.npi
                 and c.name is not distinct from d.name);
         -- new: not in force yet
         insert into etl.steward_decisions
         select {file}, c.line, c.decision, c.provider_id, c.other_provider_id, c.npi, c.name,
                c.note, {run}, null
         from temp.steward_current as c
         where not exists (
             select 1 from etl.steward_decisions as d
             where d.withdrawn_run_id is null
               and c.decision = d.decision
               and c.provider_id is not distinct from d.provider_id
               and c.other_provider_id is not distinct from d.other_provider_id
               and c.npi is not distinct from d.npi
               and c.name is not distinct from d.name);",
        file = literal(&file),
        run = literal(run_id),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn reads_each_decision_with_its_line() {
        let f = file(
            "decision,provider_id,other_provider_id,npi,name,note\n\
             merge,11,19,,,same person\n\
             \n\
             keep_apart, 5 ,13,,,\"two people, checked\"\n\
             npi_belongs_to,,,1934567896,Alan Smithee,NPPES\n",
        );
        let lines = parse(f.path()).unwrap();
        let got: Vec<(u64, Decision, &str)> = lines
            .iter()
            .map(|l| (l.line, l.decision.clone(), l.note.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, Decision::Merge(11, 19), "same person"),
                (4, Decision::KeepApart(5, 13), "two people, checked"),
                (
                    5,
                    Decision::NpiBelongsTo {
                        npi: "1934567896".into(),
                        name: "Alan Smithee".into()
                    },
                    "NPPES"
                ),
            ]
        );
    }

    #[test]
    fn a_bad_line_is_named_by_file_and_line() {
        for (text, line, what) in [
            (
                "merge,11,x,,,\n",
                2,
                "`other_provider_id` must be a provider id",
            ),
            ("merge,11,11,,,\n", 2, "provider 11 is named twice"),
            ("split,1,2,,,\n", 2, "\"split\" is not a decision"),
            (
                "npi_belongs_to,,,12345,Ann,\n",
                2,
                "`npi` must be 10 digits",
            ),
            ("npi_belongs_to,,,1234567890,,\n", 2, "`name` is empty"),
            (
                "merge,1,2,,,\nkeep_apart,2,1,,,\n",
                3,
                "kept apart here and merged by another line",
            ),
        ] {
            let f = file(&format!(
                "decision,provider_id,other_provider_id,npi,name,note\n{text}"
            ));
            let err = parse(f.path()).unwrap_err().to_string();
            let at = format!("{}:{line}: ", f.path().display());
            assert!(err.starts_with(&at) && err.contains(what), "{err}");
        }
        let f = file("decision,provider_id\nmerge,1\n");
        let err = parse(f.path()).unwrap_err().to_string();
        assert!(
            err.contains(":1: the header lacks other_provider_id, npi, name, note"),
            "{err}"
        );
    }

    #[test]
    fn merged_groups_keep_their_lowest_id() {
        let line = |decision| Line {
            line: 0,
            decision,
            note: String::new(),
        };
        let groups = merge_groups(&[
            line(Decision::Merge(19, 11)),
            line(Decision::Merge(25, 19)),
            line(Decision::Merge(7, 30)),
            line(Decision::KeepApart(1, 2)),
        ]);
        assert_eq!(
            groups.into_iter().collect::<Vec<_>>(),
            vec![(7, 7), (11, 11), (19, 11), (25, 11), (30, 7)]
        );
    }
}
