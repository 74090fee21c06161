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
/// row arrived. Returns the folder and the rows per table.
pub fn write(
    engine: &Engine,
    outputs: &Path,
    run_id: &str,
    tables: &[String],
) -> Result<(PathBuf, Vec<(String, i64)>)> {
    let dir = outputs.join("runs").join(run_id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
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
            engine
                .execute(&format!(
                    "copy (select * from omop.{table} order by 1) to {file_lit} \
                     (format parquet, compression zstd, row_group_size 122880)"
                ))
                .with_context(|| format!("cannot write {}", file.display()))?;
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
    write_key_maps(engine, &dir, current.as_ref())?;
    Ok((dir, counts))
}

/// The tables that keep ids durable: every key a provider or care site was ever known by
/// and its id. Each publish writes them beside the outputs (`<run>/state/`), so a lost
/// lake is rebuilt with every id it gave (`etl restore`). A map no key was added to since
/// the current folder's is that file, linked.
pub const KEY_MAPS: &[&str] = &["provider_keys", "care_site_keys"];

fn write_key_maps(engine: &Engine, dir: &Path, current: Option<&(String, PathBuf)>) -> Result<()> {
    let state = dir.join("state");
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create {}", state.display()))?;
    for table in KEY_MAPS {
        let file = state.join(format!("{table}.parquet"));
        if let Some((run, previous)) = current {
            let previous = previous.join("state").join(format!("{table}.parquet"));
            if previous.is_file()
                && keys_unchanged_since(engine, table, run, &previous)?
                && std::fs::hard_link(&previous, &file).is_ok()
            {
                log::debug!("  {table}: no key added since the current run, its file linked");
                continue;
            }
        }
        // (in the table's order: sorting two million keys cost a third of a second a run)
        engine
            .execute(&format!(
                "copy (select * from etl.{table}) to {} (format parquet, compression zstd)",
                literal(&file.to_string_lossy())
            ))
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(())
}

/// Whether a key map holds the keys `file` (written by `run`) holds: keys are only ever
/// added, each with the run that added it, so the same count and none newer is the same map.
fn keys_unchanged_since(engine: &Engine, table: &str, run: &str, file: &Path) -> Result<bool> {
    let in_file = engine.query_i64(&format!(
        "select count(*) from read_parquet({})",
        literal(&file.to_string_lossy())
    ))?;
    let (in_table, newer) = (
        engine.query_i64(&format!("select count(*) from etl.{table}"))?,
        engine.query_i64(&format!(
            "select count(*) from etl.{table} where first_run_id > {}",
            literal(run)
        ))?,
    );
    Ok(in_table == in_file && newer == 0)
}

/// Rebuilds the key maps of a new lake from the current outputs' copy; returns the rows
/// of each. The next run reads the sources again and gives every provider and care site
/// the id it had.
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
        engine.execute(&format!(
            "delete from etl.{table}; insert into etl.{table} by name select * from read_parquet({})",
            literal(&file.to_string_lossy())
        ))?;
        // a key has one id (the table keeps no index that would refuse a second)
        let twice = engine.query_strings(&format!(
            "select key, count(*) over () from etl.{table} group by key having count(*) > 1 \
             order by key limit 1"
        ))?;
        if let Some(row) = twice.first() {
            bail!(
                "{} is damaged: key {} has more than one id (keys with more than one: {}); nothing was \
                 restored",
                file.display(),
                row[0].as_deref().unwrap_or_default(),
                row[1].as_deref().unwrap_or_default()
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

/// Keeps the current folder and the newest `keep` others that a successful run published;
/// removes the rest, including folders left by runs that failed or were killed.
pub fn prune(outputs: &Path, keep: usize, succeeded: &[String]) -> Result<()> {
    let current = std::fs::read_link(outputs.join("current"))
        .ok()
        .map(|c| outputs.join(c));
    let runs = outputs.join("runs");
    let Ok(entries) = std::fs::read_dir(&runs) else {
        return Ok(());
    };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    dirs.reverse();
    let mut kept = 0;
    for dir in dirs {
        if current.as_ref() == Some(&dir) {
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
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    Ok(())
}
