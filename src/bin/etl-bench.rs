//! `just bench [ROWS]`: the whole pipeline at scale, each stage against what the hardware
//! allows. Generates ROWS providers in Postgres and ROWS provider rows across 20 CSV and 5
//! NDJSON objects, measures the floors (`psql \copy` of the tables to /dev/null; the
//! objects' bytes read from the bucket), runs the pipeline cold, then again after 1% new
//! data, and prints wall time, CPU time, peak memory and rows per second per stage. Each
//! run is repeated (`--repeat`; three times up to 2M rows) and the median one is shown.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
/// Sample and benchmark data: development only, not part of the library `etl` ships.
#[path = "devtools/seed.rs"]
#[allow(dead_code)] // each binary uses part of it
mod seed;

use seed::{BucketTarget, PgTarget};

#[derive(Parser, Debug)]
#[command(name = "etl-bench")]
struct Args {
    /// Providers in Postgres, and provider rows in the bucket.
    #[arg(default_value_t = 1_000_000)]
    rows: u64,
    /// The benchmark tenant's manifest.
    #[arg(long, default_value = "bench/bench.toml")]
    manifest: PathBuf,
    /// Only add what the incremental run gets (1% of ROWS new providers in Postgres, and
    /// an object of as many rows) to the benchmark's database and bucket as they are, and
    /// run nothing: to time or profile an incremental run on a copy of the lake.
    #[arg(long)]
    append: bool,
    /// Only generate the workload (ROWS providers in Postgres, ROWS provider rows in the
    /// bucket), replacing what the benchmark's database and bucket held, and run nothing:
    /// to time or profile a cold run of `etl` itself.
    #[arg(long, conflicts_with = "append")]
    generate: bool,
    /// How many times each run (the reference, cold, incremental, nothing new) is timed; the
    /// run of median wall time is shown. Default: 3 up to 2M rows, else 1.
    #[arg(long)]
    repeat: Option<usize>,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn main() {
    if let Err(err) = run(Args::parse()) {
        eprintln!("etl-bench: error: {err:#}");
        std::process::exit(1);
    }
}

struct Stage {
    name: String,
    wall: f64,
    cpu: f64,
    rss: f64,
    rows: i64,
}

fn run(args: Args) -> Result<()> {
    let pg = PgTarget {
        host: "127.0.0.1".into(),
        port: env_or("ETL_PG_PORT", "54329").parse()?,
        user: env_or("ETL_PG_USER", "etl"),
        password: env_or("ETL_PG_PASSWORD", "etl-local"),
        database: "bench".into(),
    };
    let bucket = BucketTarget {
        endpoint: format!("127.0.0.1:{}", env_or("ETL_S3_PORT", "8333")),
        region: "us-east-1".into(),
        bucket: "bench".into(),
        access_key_id: env_or("ETL_S3_ACCESS_KEY", "etl-local"),
        secret_access_key: env_or("ETL_S3_SECRET_KEY", "etl-local-secret"),
    };
    let rows = args.rows;
    if args.append {
        return append(&pg, &bucket, rows);
    }
    println!("etl bench: {rows} providers in Postgres, {rows} provider rows in 25 objects (20 CSV, 5 NDJSON)");
    println!(
        "machine: {} cores ({}), {}",
        num_cpus(),
        cpu_model(),
        mem_total()
    );

    // The workload.
    let started = Instant::now();
    let mut admin = PgTarget {
        database: "postgres".into(),
        ..pg.clone()
    }
    .client()?;
    // An autovacuum worker of the last benchmark's database (the server's, not ours to
    // end) can hold it for a moment: try again before giving up.
    let mut attempt = 0;
    while let Err(e) = admin.batch_execute("drop database if exists bench with (force)") {
        attempt += 1;
        if attempt == 10 {
            return Err(e.into());
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    admin.batch_execute("create database bench")?;
    let (sites, _) = seed::seed_postgres(&pg, rows)?;
    bucket.ensure_bucket()?;
    bucket.clear("")?;
    let files = seed::provider_files(1, rows, 20, 5, "providers/day-1/", sites);
    let bytes: usize = files.iter().map(|(_, b)| b.len()).sum();
    for (key, body) in &files {
        bucket.put(key, body)?;
    }
    println!(
        "workload generated in {:.1}s ({:.1} MB of files)\n",
        started.elapsed().as_secs_f64(),
        bytes as f64 / 1e6
    );
    if args.generate {
        return Ok(());
    }

    // The floors.
    settle()?;
    let pg_floor = time(|| {
        for table in ["care_site", "provider"] {
            let status = Command::new("psql")
                .args([
                    "-h",
                    &pg.host,
                    "-p",
                    &pg.port.to_string(),
                    "-U",
                    &pg.user,
                    "-d",
                    &pg.database,
                    "-q",
                    "-c",
                ])
                .arg(format!("\\copy (select * from {table}) to '/dev/null'"))
                .env("PGPASSWORD", &pg.password)
                .status()?;
            if !status.success() {
                bail!("psql \\copy failed");
            }
        }
        Ok(())
    })?;
    let s3_floor = time(|| {
        let b = etl::sources::s3::bucket(&bucket.source())?;
        for (key, _) in &files {
            b.get_object(key).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(())
    })?;

    // Each run is timed `repeat` times, the median shown: a single run on a shared machine
    // can be 15% off.
    let repeat = args
        .repeat
        .unwrap_or(if rows <= 2_000_000 { 3 } else { 1 })
        .max(1);

    // The hand-written reference, first: its peak memory is the largest of this process's
    // children so far (psql's are small).
    let reference = median(
        (0..repeat)
            .map(|_| run_reference(&pg, &bucket))
            .collect::<Result<Vec<_>>>()?,
        |r| r.wall,
    );

    // The runs.
    let manifest = args.manifest.clone();
    let lake = Path::new("lake/bench");
    let cold_lake = Path::new("lake/bench-cold");
    let etl = std::env::current_exe()?.with_file_name("etl");
    let mut colds = Vec::new();
    for _ in 0..repeat {
        let _ = std::fs::remove_dir_all(lake);
        colds.push(run_etl(&etl, &manifest, lake)?);
    }
    let cold = median(colds, |r| r.whole.wall);
    append_new_rows(&pg, &bucket, (rows, rows), sites, "providers/day-2/")?;
    // every incremental run from the lake the cold runs left
    if repeat > 1 {
        let _ = std::fs::remove_dir_all(cold_lake);
        copy_dir(lake, cold_lake)?;
    }
    let mut incrementals = Vec::new();
    for n in 0..repeat {
        if n > 0 {
            let _ = std::fs::remove_dir_all(lake);
            copy_dir(cold_lake, lake)?;
        }
        incrementals.push(run_etl(&etl, &manifest, lake)?);
    }
    let _ = std::fs::remove_dir_all(cold_lake);
    let incremental = median(incrementals, |r| r.whole.wall);
    // what every run costs, whatever it brings: a run with nothing new
    let idle = median(
        (0..repeat)
            .map(|_| run_etl(&etl, &manifest, lake))
            .collect::<Result<Vec<_>>>()?,
        |r| r.whole.wall,
    );

    if repeat > 1 {
        println!("each run timed {repeat} times: the run of median wall time, and the range of the wall times\n");
    }
    for (title, run, floors) in [
        (
            "cold run (everything new)",
            &cold,
            [Some(pg_floor), Some(s3_floor)],
        ),
        (
            "incremental run (+1% rows in Postgres, +1 object with 1% rows)",
            &incremental,
            [None, None],
        ),
        ("run with nothing new (the fixed cost)", &idle, [None, None]),
    ] {
        let (run, range) = run;
        let stages = &run.stages;
        println!("{title}{}", range.describe());
        println!(
            "  {:<18} {:>8} {:>8} {:>9} {:>10} {:>11} {:>8} {:>9}",
            "stage", "wall s", "cpu s", "peak MB", "rows", "rows/s", "floor s", "x floor"
        );
        let mut total = (0.0, 0.0);
        for (i, s) in stages.iter().enumerate() {
            let floor = if i < 2 { floors[i] } else { None };
            let rate = if s.wall > 0.0 {
                s.rows as f64 / s.wall
            } else {
                0.0
            };
            println!(
                "  {:<18} {:>8.2} {:>8.2} {:>9.0} {:>10} {:>11.0} {:>8} {:>9}",
                s.name,
                s.wall,
                s.cpu,
                s.rss,
                s.rows,
                rate,
                floor.map_or("-".to_string(), |f| format!("{f:.2}")),
                floor.map_or("-".to_string(), |f| format!("{:.1}", s.wall / f)),
            );
            total = (total.0 + s.wall, total.1 + s.cpu);
        }
        // what the steps do not time: starting, opening the lake, the final commit (and
        // the checkpoint DuckDB may do then), the run's report, closing the lake
        let whole = &run.whole;
        println!(
            "  {:<18} {:>8.2} {:>8.2} {:>9.0}",
            "open, commit, close",
            whole.wall - total.0,
            whole.cpu - total.1,
            whole.rss
        );
        println!(
            "  {:<18} {:>8.2} {:>8.2} {:>9.0}",
            "total", whole.wall, whole.cpu, whole.rss
        );
        println!(
            "  possible duplicates (blocking, comparing): {:.2} s of the transform, {} pairs listed\n",
            run.duplicates.0, run.duplicates.1
        );
    }
    let (reference, reference_range) = reference;
    let (cold, incremental, idle) = (cold.0.whole, incremental.0.whole, idle.0.whole);
    println!(
        "against the hand-written reference (bench/reference.sql, DuckDB CLI, same data, memory_limit {})",
        env_or("ETL_BENCH_REFERENCE_MEMORY", "8GB")
    );
    println!(
        "  {:<18} {:>8} {:>8} {:>9} {:>10}",
        "", "wall s", "cpu s", "peak MB", "x reference"
    );
    println!(
        "  {:<18} {:>8.2} {:>8.2} {:>9.0} {:>10}{}",
        "reference",
        reference.wall,
        reference.cpu,
        reference.rss,
        "1.0",
        reference_range.describe()
    );
    println!(
        "  {:<18} {:>8.2} {:>8.2} {:>9.0} {:>10.1}",
        "etl cold run",
        cold.wall,
        cold.cpu,
        cold.rss,
        cold.wall / reference.wall
    );
    println!(
        "  incremental run: {:.2} s, {:.1}% of the cold run; a run with nothing new: {:.2} s\n",
        incremental.wall,
        100.0 * incremental.wall / cold.wall,
        idle.wall
    );
    println!("rows: what each stage handled: rows read (extract), raw rows computed (transform), rows written (publish)");
    println!("floors: psql \\copy of care_site and provider to /dev/null; every object's bytes read over one connection");
    println!("command: just bench {rows}");
    Ok(())
}

/// Runs bench/reference.sql with the DuckDB CLI, its `${...}` filled in: its wall time, CPU
/// time and peak memory, the whole process's.
fn run_reference(pg: &PgTarget, bucket: &BucketTarget) -> Result<Stage> {
    settle()?;
    let out = Path::new("lake/bench-reference");
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out)?;
    let root = std::env::current_dir()?;
    let sql = std::fs::read_to_string("bench/reference.sql")
        .context("cannot read bench/reference.sql")?;
    let filled = [
        (
            "EXTENSIONS",
            root.join(".tools/extensions").display().to_string(),
        ),
        // the reference gets the memory it needs: written in one pass, it cannot run in
        // the limit etl is held to (at 10M rows it runs out of memory at 2 GB)
        ("MEMORY", env_or("ETL_BENCH_REFERENCE_MEMORY", "8GB")),
        (
            "PG_DSN",
            format!(
                "host={} port={} dbname={} user={} password={}",
                pg.host, pg.port, pg.database, pg.user, pg.password
            ),
        ),
        ("S3_KEY", bucket.access_key_id.clone()),
        ("S3_SECRET", bucket.secret_access_key.clone()),
        ("S3_ENDPOINT", bucket.endpoint.clone()),
        ("OUT", root.join(out).display().to_string()),
    ]
    .iter()
    .fold(sql, |sql, (name, value)| {
        sql.replace(&format!("${{{name}}}"), value)
    });
    let cli = std::env::var("ETL_DUCKDB_CLI").unwrap_or_else(|_| ".tools/bin/duckdb".into());
    let mut cmd = Command::new(&cli);
    cmd.arg("-batch")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    let whole = measured(cmd, |child| {
        std::io::Write::write_all(
            &mut child.stdin.take().context("no stdin")?,
            filled.as_bytes(),
        )?;
        Ok(())
    })
    .with_context(|| format!("cannot run the DuckDB CLI {cli}"))?;
    if !whole.success {
        bail!("the reference (bench/reference.sql) failed");
    }
    let rows = std::process::Command::new(&cli)
        .arg("-csv")
        .arg("-noheader")
        .arg("-c")
        .arg(format!(
            "select count(*) from '{}'",
            root.join(out).join("provider.parquet").display()
        ))
        .output()?;
    Ok(Stage {
        name: "reference".into(),
        wall: whole.wall,
        cpu: whole.cpu,
        rss: whole.rss,
        rows: String::from_utf8_lossy(&rows.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
    })
}

/// What a child process cost, from its start to its exit.
struct Whole {
    success: bool,
    wall: f64,
    cpu: f64,
    /// peak resident memory, MB
    rss: f64,
}

/// Starts `cmd`, lets `feed` talk to it, waits for it and measures the whole process: wall
/// time from its start to its exit, and the CPU time and peak memory the kernel kept for it
/// (`wait4`), so that nothing it does after its last log line is left out.
fn measured(
    mut cmd: Command,
    feed: impl FnOnce(&mut std::process::Child) -> Result<()>,
) -> Result<Whole> {
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    feed(&mut child)?;
    let mut status: libc::c_int = 0;
    // SAFETY: wait4 writes only the status and the struct it is given; the child is ours
    // and not waited for elsewhere.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    let wall = started.elapsed().as_secs_f64();
    if pid < 0 {
        bail!(
            "cannot wait for the child: {}",
            std::io::Error::last_os_error()
        );
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Whole {
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        wall,
        cpu: secs(ru.ru_utime) + secs(ru.ru_stime),
        rss: ru.ru_maxrss as f64 / 1024.0,
    })
}

/// The wall times of a run timed several times: the lowest and the highest.
struct Range {
    runs: usize,
    low: f64,
    high: f64,
}

impl Range {
    fn describe(&self) -> String {
        if self.runs < 2 {
            return String::new();
        }
        format!(
            " (median of {}: {:.2} to {:.2} s)",
            self.runs, self.low, self.high
        )
    }
}

/// The run of median wall time (the lower middle one of an even number), and the range.
fn median<T>(mut runs: Vec<T>, wall: impl Fn(&T) -> f64) -> (T, Range) {
    runs.sort_by(|a, b| wall(a).total_cmp(&wall(b)));
    let range = Range {
        runs: runs.len(),
        low: runs.first().map_or(0.0, &wall),
        high: runs.last().map_or(0.0, &wall),
    };
    let middle = (runs.len() - 1) / 2;
    (runs.swap_remove(middle), range)
}

/// Copies a folder as it is (a lake, to start each incremental run from it): its links
/// (`omop/current`) stay links.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if !status.success() {
        bail!("cannot copy {} to {}", from.display(), to.display());
    }
    Ok(())
}

/// Writes out what the benchmark itself left unwritten (the generated data, a copy of the
/// lake) before a timed run, so that the run's own sync does not write it for the
/// benchmark: after `cp -a` of a 1M lake (250 MB), the incremental run that followed
/// committed in 0.63 to 0.68 s, against 0.38 to 0.40 s after a `sync` (three runs each,
/// alternated). A tenant's run finds its lake as the last run left it, written out.
fn settle() -> Result<()> {
    let status = Command::new("sync").status().context("cannot run sync")?;
    if !status.success() {
        bail!("sync failed");
    }
    Ok(())
}

fn time(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let started = Instant::now();
    f()?;
    Ok(started.elapsed().as_secs_f64())
}

/// A run's stages, the whole process, and what finding the possible duplicates cost it:
/// (seconds over every batch, pairs listed).
struct EtlRun {
    stages: Vec<Stage>,
    whole: Whole,
    duplicates: (f64, i64),
}

/// What the incremental run gets: 1% of `rows` new providers in Postgres, after the `known`
/// ones, and an object under `prefix` with a row for each.
fn append_new_rows(
    pg: &PgTarget,
    bucket: &BucketTarget,
    (rows, known): (u64, u64),
    sites: u64,
    prefix: &str,
) -> Result<()> {
    let new_rows = (rows / 100).max(1);
    seed::append_providers(pg, new_rows)?;
    for (key, body) in seed::provider_files(known + 1, new_rows, 1, 0, prefix, sites) {
        bucket.put(&key, &body)?;
    }
    Ok(())
}

/// `--append`: the incremental run's new data added to the benchmark's database and bucket
/// as they are: the providers after the last in Postgres, their object named after it.
fn append(pg: &PgTarget, bucket: &BucketTarget, rows: u64) -> Result<()> {
    let mut client = pg.client()?;
    let row = client.query_one(
        "select coalesce(max(provider_id), 0)::bigint, (select count(*) from care_site)::bigint \
         from provider",
        &[],
    )?;
    let (known, sites): (i64, i64) = (row.get(0), row.get(1));
    let prefix = format!("providers/after-{known}/");
    append_new_rows(pg, bucket, (rows, known as u64), sites as u64, &prefix)?;
    println!("appended 1% of {rows} rows: Postgres and {prefix}");
    Ok(())
}

fn run_etl(etl: &Path, manifest: &Path, lake: &Path) -> Result<EtlRun> {
    settle()?;
    let log = std::env::temp_dir().join(format!("etl-bench-{}.log", std::process::id()));
    let mut cmd = Command::new(etl);
    cmd.args(["-v", "run"])
        .arg(manifest)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    let whole = measured(cmd, |_| Ok(())).context("cannot run etl")?;
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    if !whole.success {
        bail!("etl run failed:\n{stderr}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lake.join("last-run.json"))?)?;
    // `-v` times each model: "  …/staged/possible_duplicates.sql (batch 1) in 0.12s"
    let seconds: f64 = stderr
        .lines()
        .filter(|l| l.contains("staged/possible_duplicates.sql (batch"))
        .filter_map(|l| {
            l.rsplit(" in ")
                .next()?
                .trim_end_matches('s')
                .parse::<f64>()
                .ok()
        })
        // (not `sum`: a float sum of nothing is -0.0, printed "-0.00")
        .fold(0.0, |total, s| total + s);
    let pairs = summary["counts"]["possible_duplicates"]
        .as_i64()
        .unwrap_or_default();
    let stages = summary["steps"]
        .as_array()
        .context("no steps in the run summary")?
        .iter()
        .map(|s| Stage {
            name: s["name"].as_str().unwrap_or_default().to_string(),
            wall: s["seconds"].as_f64().unwrap_or_default(),
            cpu: s["cpu_seconds"].as_f64().unwrap_or_default(),
            rss: s["peak_rss_mb"].as_f64().unwrap_or_default(),
            rows: s["rows"].as_i64().unwrap_or_default(),
        })
        .collect();
    Ok(EtlRun {
        stages,
        whole,
        duplicates: (seconds, pairs),
    })
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The processor's model as the kernel names it (runs are compared on one model only).
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "processor unknown".to_string())
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or("memory unknown".to_string(), |kb| {
            format!("{:.0} GiB memory", kb / 1024.0 / 1024.0)
        })
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_run_of_median_wall_time_is_shown_with_the_range() {
        let runs = vec![("slow", 3.0), ("fast", 1.0), ("middle", 2.0)];
        let (run, range) = median(runs, |r| r.1);
        assert_eq!(run.0, "middle");
        assert_eq!((range.runs, range.low, range.high), (3, 1.0, 3.0));
        assert_eq!(range.describe(), " (median of 3: 1.00 to 3.00 s)");
    }

    #[test]
    fn of_an_even_number_of_runs_the_lower_middle_one_is_shown() {
        let runs = vec![("d", 4.0), ("a", 1.0), ("c", 3.0), ("b", 2.0)];
        let (run, range) = median(runs, |r| r.1);
        assert_eq!(run.0, "b");
        assert_eq!((range.low, range.high), (1.0, 4.0));
    }

    #[test]
    fn a_single_run_is_shown_without_a_range() {
        let (run, range) = median(vec![("only", 5.0)], |r| r.1);
        assert_eq!(run.0, "only");
        assert_eq!(range.describe(), "");
    }
}
