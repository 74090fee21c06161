//! Publishing: the OMOP tables written as Parquet into a folder of their own per run,
//! counted back from the files, then made current by swapping one symlink. A table whose
//! rows did not change since the current folder was published is not written again: the
//! new folder holds a hard link to the same file. A reader of
//! `omop/current/` sees one whole run or the one before, never a mix; a failed run leaves
//! `current` where it was.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::engine::{literal, Engine};

/// Writes each table to `<outputs>/runs/<run_id>/<table>.parquet` and checks that every
/// row arrived. Returns the folder and the rows per table; a failed write removes the folder.
pub fn write(
    engine: &Engine,
    outputs: &Path,
    run_id: &str,
    tables: &[String],
) -> Result<(PathBuf, Vec<(String, i64)>)> {
    let dir = outputs.join("runs").join(run_id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    match write_into(engine, outputs, &dir, tables) {
        Ok(counts) => Ok((dir, counts)),
        Err(err) => {
            // a folder never made current: what it holds so far goes with the failed run
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                log::warn!("cannot remove {}: {e}", dir.display());
            }
            Err(err)
        }
    }
}

/// Writes each table, and the key maps, into the run's folder `dir`.
fn write_into(
    engine: &Engine,
    outputs: &Path,
    dir: &Path,
    tables: &[String],
) -> Result<Vec<(String, i64)>> {
    let mut counts = Vec::new();
    let current = current_run(outputs);
    for table in tables {
        let file = dir.join(format!("{table}.parquet"));
        let file_lit = literal(&file.to_string_lossy());
        let previous = current
            .as_ref()
            .map(|(run, dir)| (run, dir.join(format!("{table}.parquet"))));
        let linked = match previous {
            Some((run, previous)) if previous.is_file() && unchanged_since(engine, table, run)? => {
                // the same rows as the current folder's file: the file itself, linked
                std::fs::hard_link(&previous, &file).is_ok()
            }
            _ => false,
        };
        if linked {
            log::debug!("  {table}: unchanged since the current run, its file linked");
        } else {
            // (not sorted by id: sorting 10M providers took half of the publish, 1.9 s of
            // 3.7 s at a 1 GB memory limit, every run; readers order by provider_id. Nor
            // in the table's order: its row groups written as they come, 10M providers
            // in 1.65 s against 1.9 to 2.0 s. zstd at level 1: 1.55 to 1.7 s and 149 MB,
            // against 1.9 s and 155 MB at its default level, 3)
            engine.execute("set preserve_insertion_order = false")?;
            let written = engine.execute(&format!(
                "copy (select * from omop.{table}) to {file_lit} \
                 (format parquet, {PARQUET}, row_group_size 122880)"
            ));
            // (the write's own error first: a failed reset must not hide it)
            let reset = engine.execute("reset preserve_insertion_order");
            written.with_context(|| format!("cannot write {}", file.display()))?;
            reset?;
        }
        let in_table = engine.query_i64(&format!("select count(*) from omop.{table}"))?;
        let in_file =
            engine.query_i64(&format!("select count(*) from read_parquet({file_lit})"))?;
        if in_table != in_file {
            bail!(
                "{} holds {in_file} rows but omop.{table} has {in_table}: not published",
                file.display()
            );
        }
        counts.push((table.clone(), in_file));
    }
    write_key_maps(engine, dir, current.as_ref())?;
    Ok(counts)
}

/// The tables that keep ids durable: every key a provider or care site was ever known by
/// and its id. Each publish writes them beside the outputs (`<run>/state/`), so a lost
/// lake is rebuilt with every id it gave (`etl restore`). Keys are only ever added, each
/// with the run that added it, so a map is published in parts: `<map>.parquet` and
/// `<map>.<run>.parquet`, the keys added in that run and after the parts before it. A
/// publish links the current folder's parts and writes only the keys added since; one
/// that would make more than `MAX_KEY_PARTS` parts writes the whole map again, as one.
pub const KEY_MAPS: &[&str] = &["provider_keys", "care_site_keys"];

/// Parts beyond the first before a map is written whole again (a daily run adding keys
/// makes one a day).
const MAX_KEY_PARTS: usize = 30;

fn write_key_maps(engine: &Engine, dir: &Path, current: Option<&(String, PathBuf)>) -> Result<()> {
    let state = dir.join("state");
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create {}", state.display()))?;
    for table in KEY_MAPS {
        if let Some((run, previous)) = current {
            if extend_key_map(engine, table, run, &previous.join("state"), &state)? {
                continue;
            }
            // (what was linked is written over as one file)
            for part in key_map_parts(&state, table)? {
                std::fs::remove_file(&part)
                    .with_context(|| format!("cannot remove {}", part.display()))?;
            }
        }
        // (in the table's order: sorting two million keys cost a third of a second a run)
        write_keys(
            engine,
            &format!("select * from etl.{table}"),
            &state.join(format!("{table}.parquet")),
        )?;
    }
    Ok(())
}

/// Publishes a key map as the parts `previous` (published by `run`) holds, linked, plus the
/// keys added since, when those parts and the new keys are the whole map. False, with
/// nothing written but links, when they are not (no parts; a map changed otherwise than
/// by keys added), or when the parts would be too many: the map is then written whole.
fn extend_key_map(
    engine: &Engine,
    table: &str,
    run: &str,
    previous: &Path,
    state: &Path,
) -> Result<bool> {
    let parts = key_map_parts(previous, table)?;
    let base = previous.join(format!("{table}.parquet"));
    if !parts.contains(&base) {
        return Ok(false);
    }
    let in_parts = engine.query_i64(&format!(
        "select count(*) from read_parquet([{}])",
        parts
            .iter()
            .map(|p| literal(&p.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(", ")
    ))?;
    let added = format!(
        "select * from etl.{table} where first_run_id > {}",
        literal(run)
    );
    let (in_table, newer) = (
        engine.query_i64(&format!("select count(*) from etl.{table}"))?,
        engine.query_i64(&format!("select count(*) from ({added})"))?,
    );
    if in_table != in_parts + newer || (newer > 0 && parts.len() > MAX_KEY_PARTS) {
        return Ok(false);
    }
    for part in &parts {
        let name = part.file_name().expect("a part is a file");
        if std::fs::hard_link(part, state.join(name)).is_err() {
            return Ok(false);
        }
    }
    if newer == 0 {
        log::debug!("  {table}: no key added since the current run, its parts linked");
        return Ok(true);
    }
    let run_dir = state.parent().expect("state is inside the run's folder");
    let this_run = run_dir
        .file_name()
        .expect("the run's folder")
        .to_string_lossy();
    write_keys(
        engine,
        &added,
        &state.join(format!("{table}.{this_run}.parquet")),
    )?;
    log::debug!("  {table}: {newer} keys added since the current run, the earlier parts linked");
    Ok(true)
}

/// How published Parquet is compressed.
const PARQUET: &str = "compression zstd, compression_level 1";

/// Writes the keys `select` gives to `file`.
fn write_keys(engine: &Engine, select: &str, file: &Path) -> Result<()> {
    engine
        .execute(&format!(
            "copy ({select}) to {} (format parquet, {PARQUET})",
            literal(&file.to_string_lossy())
        ))
        .with_context(|| format!("cannot write {}", file.display()))
}

/// The files of a key map in a state folder: `<map>.parquet` and its `<map>.<run>.parquet`
/// parts, sorted (none when the folder is missing).
fn key_map_parts(state: &Path, table: &str) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(state) else {
        return Ok(Vec::new());
    };
    let mut parts = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", state.display()))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let is_part = name == format!("{table}.parquet")
            || (name.starts_with(&format!("{table}.")) && name.ends_with(".parquet"));
        if is_part {
            parts.push(entry.path());
        }
    }
    parts.sort();
    Ok(parts)
}

/// Rebuilds the key maps of a new lake from the current outputs' copy (every part of
/// each); returns the rows of each. The next run reads the sources again and gives every
/// provider and care site the id it had.
pub fn restore_key_maps(engine: &Engine, outputs: &Path) -> Result<Vec<(String, i64)>> {
    let state = outputs.join("current").join("state");
    let mut restored = Vec::new();
    for table in KEY_MAPS {
        let file = state.join(format!("{table}.parquet"));
        if !file.is_file() {
            bail!(
                "{} is missing: the current outputs were published by a release that did not \
                 keep the key maps; nothing to restore ids from",
                file.display()
            );
        }
        let parts = key_map_parts(&state, table)?;
        let files: Vec<String> = parts
            .iter()
            .map(|p| literal(&p.to_string_lossy()))
            .collect();
        engine.execute(&format!(
            "delete from etl.{table}; \
             insert into etl.{table} by name select * from read_parquet([{}])",
            files.join(", ")
        ))?;
        // a key has one id (the table keeps no index that would refuse a second)
        let twice = engine.query_strings(&format!(
            "select key, count(*) over () from etl.{table} group by key having count(*) > 1 \
             order by key limit 1"
        ))?;
        if let Some(row) = twice.first() {
            let named: Vec<String> = parts
                .iter()
                .filter_map(|p| Some(p.file_name()?.to_string_lossy().to_string()))
                .collect();
            bail!(
                "{} is damaged: key {} has more than one id (keys with more than one: {}); nothing was \
                 restored (the map is read from {} in {})",
                file.display(),
                row[0].as_deref().unwrap_or_default(),
                row[1].as_deref().unwrap_or_default(),
                named.join(", "),
                state.display()
            );
        }
        restored.push((
            table.to_string(),
            engine.query_i64(&format!("select count(*) from etl.{table}"))?,
        ));
    }
    Ok(restored)
}

/// The run `<outputs>/current` points at, and its folder.
fn current_run(outputs: &Path) -> Option<(String, PathBuf)> {
    let target = std::fs::read_link(outputs.join("current")).ok()?;
    let dir = outputs.join(&target);
    let run = dir.file_name()?.to_string_lossy().to_string();
    Some((run, dir))
}

/// Whether `omop.<table>` holds the rows it held when `run` published it: no version of
/// a row began or ended after that run (its history, `omop.<table>_history`, says). A
/// table without a history is never taken as unchanged.
fn unchanged_since(engine: &Engine, table: &str, run: &str) -> Result<bool> {
    let has_history = engine.query_i64(&format!(
        "select count(*) from duckdb_tables() where schema_name = 'omop' and table_name = {}",
        literal(&format!("{table}_history"))
    ))? > 0;
    if !has_history {
        return Ok(false);
    }
    let newer = engine.query_i64(&format!(
        "select count(*) from omop.{table}_history where valid_from > {run} or valid_to > {run}",
        run = literal(run)
    ))?;
    Ok(newer == 0)
}

/// Points `<outputs>/current` at the run's folder (an atomic rename of a new symlink).
pub fn make_current(outputs: &Path, run_dir: &Path) -> Result<()> {
    let target = run_dir
        .strip_prefix(outputs)
        .unwrap_or(run_dir)
        .to_path_buf();
    let tmp = outputs.join(".current.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp)
        .with_context(|| format!("cannot create symlink {}", tmp.display()))?;
    std::fs::rename(&tmp, outputs.join("current"))
        .with_context(|| format!("cannot update {}", outputs.join("current").display()))?;
    Ok(())
}

/// Whether `current` points to `run_dir`.
pub fn is_current(outputs: &Path, run_dir: &Path) -> bool {
    std::fs::read_link(outputs.join("current")).is_ok_and(|c| outputs.join(c) == run_dir)
}

/// Keeps the current folder and the newest `keep` others that a successful run published;
/// removes the rest, including folders left by runs that failed or were killed. Only
/// folders: a file someone put among them is left alone. A folder that cannot be removed
/// does not stop the others; the error names every one.
pub fn prune(outputs: &Path, keep: usize, succeeded: &[String]) -> Result<()> {
    let runs = outputs.join("runs");
    let Ok(entries) = std::fs::read_dir(&runs) else {
        return Ok(());
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs.reverse();
    let mut kept = 0;
    let mut failed = Vec::new();
    for dir in dirs {
        if is_current(outputs, &dir) {
            continue;
        }
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if succeeded.contains(&name) && kept < keep {
            kept += 1;
            continue;
        }
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            failed.push(format!("cannot remove {}: {e}", dir.display()));
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{is_current, make_current};

    #[test]
    fn the_folder_current_points_to_is_current_and_no_other() {
        let outputs = tempfile::tempdir().unwrap();
        let (a, b) = (
            outputs.path().join("runs/20260101T000000.000000Z"),
            outputs.path().join("runs/20260102T000000.000000Z"),
        );
        for dir in [&a, &b] {
            std::fs::create_dir_all(dir).unwrap();
        }
        assert!(!is_current(outputs.path(), &a), "no current yet");
        make_current(outputs.path(), &a).unwrap();
        assert!(is_current(outputs.path(), &a));
        assert!(!is_current(outputs.path(), &b));
        make_current(outputs.path(), &b).unwrap();
        assert!(is_current(outputs.path(), &b));
        assert!(!is_current(outputs.path(), &a));
    }
}
