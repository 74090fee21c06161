//! Test harness: each test gets its own tenant on the real services started by `just up`:
//! a Postgres database, an S3 bucket and a project folder of its own, and runs the real
//! `etl` binary against them.
#![allow(dead_code)]

pub mod golden;
pub mod proxy;
/// The sample data generator of `etl-seed` (development only, not in the library).
#[path = "../../src/bin/devtools/seed.rs"]
pub mod seed;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use seed::{BucketTarget, PgTarget};

pub const PG_PASSWORD_VAR: &str = "T_PG_PASSWORD";
pub const S3_KEY_VAR: &str = "T_S3_ACCESS_KEY";
pub const S3_SECRET_VAR: &str = "T_S3_SECRET_KEY";

#[derive(Clone)]
pub struct Services {
    pub pg_host: String,
    pub pg_port: u16,
    pub pg_user: String,
    pub pg_password: String,
    pub s3_endpoint: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

impl Services {
    /// The services of `scripts/services.sh`, with the same defaults.
    pub fn from_env() -> Services {
        Services {
            pg_host: "127.0.0.1".into(),
            pg_port: env_or("ETL_PG_PORT", "54329").parse().unwrap(),
            pg_user: env_or("ETL_PG_USER", "etl"),
            pg_password: env_or("ETL_PG_PASSWORD", "etl-local"),
            s3_endpoint: format!("127.0.0.1:{}", env_or("ETL_S3_PORT", "8333")),
            s3_access_key: env_or("ETL_S3_ACCESS_KEY", "etl-local"),
            s3_secret_key: env_or("ETL_S3_SECRET_KEY", "etl-local-secret"),
        }
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bytes of a file of `fixtures/files/`.
pub fn file_fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("fixtures/files").join(name)).unwrap()
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The models of a test tenant's pipeline, in the order they run (as in pipelines/_base.toml).
pub const MODELS: [&str; 18] = [
    "staged/care_site_rows.sql",
    "staged/care_site_keys.sql",
    "staged/care_site.sql",
    "staged/provider_changes.sql",
    "staged/care_site_resolution.sql",
    "staged/provider_match.sql",
    "staged/provider_clusters.sql",
    "staged/provider_rows.sql",
    "staged/provider_keys.sql",
    "staged/possible_duplicates.sql",
    "staged/quarantine.sql",
    "staged/provider_row_status.sql",
    "staged/dq_flags.sql",
    "omop/care_site.sql",
    "omop/provider.sql",
    "omop/provider_history.sql",
    "omop/care_site_history.sql",
    "staged/reconciliation.sql",
];

pub struct Tenant {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub database: String,
    pub bucket: String,
    pub manifest: PathBuf,
    pub services: Services,
    /// Extra environment for every `etl` call (e.g. a wrong secret).
    pub env: Vec<(String, String)>,
    /// Ports kept closed for as long as the tenant lives (see [`ClosedPort`]).
    closed_ports: RefCell<Vec<ClosedPort>>,
}

impl Tenant {
    /// A tenant with empty source tables and an empty bucket.
    pub fn new(label: &str) -> Tenant {
        let services = Services::from_env();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let name = format!("{}_{pid}_{n}", label.replace('-', "_"));
        let database = format!("t_{name}");
        let bucket = format!("t-{}", name.replace('_', "-"));
        let dir = tempfile::tempdir().unwrap();

        let mut admin = postgres::Config::new()
            .host(&services.pg_host)
            .port(services.pg_port)
            .user(&services.pg_user)
            .password(&services.pg_password)
            .dbname("postgres")
            .connect(postgres::NoTls)
            .expect("Postgres of `just up` is reachable");
        admin
            .batch_execute(&format!("drop database if exists {database} with (force)"))
            .unwrap();
        admin
            .batch_execute(&format!("create database {database}"))
            .unwrap();

        let tenant = Tenant {
            name: name.clone(),
            dir,
            database,
            bucket,
            manifest: PathBuf::new(),
            services,
            env: Vec::new(),
            closed_ports: RefCell::new(Vec::new()),
        };
        tenant.bucket_target().ensure_bucket().unwrap();
        tenant.bucket_target().clear("").unwrap();
        let manifest = tenant
            .dir
            .path()
            .join("pipelines")
            .join(format!("{name}.toml"));
        std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
        let mut tenant = tenant;
        tenant.manifest = manifest;
        tenant.write_manifest(|m| m);
        tenant
    }

    /// A tenant with the sample data: Postgres seeded, the sample files in its bucket.
    pub fn with_sample(label: &str) -> Tenant {
        let tenant = Tenant::new(label);
        tenant.seed_postgres(10);
        tenant.upload_dir(&repo().join("fixtures/sample/bucket"));
        tenant
    }

    /// Writes the manifest, letting the test edit the default text first.
    pub fn write_manifest(&self, edit: impl FnOnce(String) -> String) {
        let repo = repo();
        let text = format!(
            r#"tenant = "{tenant}"

[paths]
sql = "{repo}/sql"
vocab = "{repo}/vocab"
lake = "{dir}/lake"

[engine]
extension_directory = "{repo}/.tools/extensions"
memory_limit = "1GB"
threads = 2

[retry]
attempts = 3
initial_delay_seconds = 0.2
max_delay_seconds = 1.0

[sources.pg]
kind = "postgres"
host = "{pg_host}"
port = "{pg_port}"
database = "{database}"
user = "{pg_user}"
password = "${{{pg_password_var}}}"
tables = ["care_site", "provider"]
cursor = "updated_at"
keys = {{ care_site = "care_site_id", provider = "provider_id" }}
lookback_seconds = 3600

[sources.files]
kind = "s3"
endpoint = "{s3_endpoint}"
bucket = "{bucket}"
prefix = "providers/"
access_key_id = "${{{s3_key_var}}}"
secret_access_key = "${{{s3_secret_var}}}"
columns = ["ProviderName", "ProviderID", "NPI", "Specialty", "SiteName", "SourceID", "SpecSource", "IDSource"]

# How each source's rows map to the staging contract (docs/manifest.md#the-staging-contract):
# contract field = the source's column, or a DuckDB expression over its columns.
[sources.pg.map.provider]
table = "provider"
name = "provider_name"
npi = "npi"
source_id = "provider_source_value"
specialty = "specialty_source_value"
site_id = "care_site_id"

[sources.pg.map.care_site]
table = "care_site"
site_id = "care_site_id"
name = "care_site_name"
location_id = "location_id"
source_value = "care_site_source_value"
place_of_service = "place_of_service_source_value"
place_of_service_concept_id = "place_of_service_concept_id"

[sources.files.map.provider]
name = "ProviderName"
npi = "NPI"
source_id = "SourceID"
client_provider_id = "ProviderID"
specialty = "Specialty"
specialty_alt = "SpecSource"
site_name = "SiteName"

[[steps]]
name = "extract_postgres"
extract = "pg"

[[steps]]
name = "extract_files"
extract = "files"

[[steps]]
name = "transform"
sql = [
{models}
]

[[steps]]
name = "publish"
publish = ["care_site", "provider"]
"#,
            tenant = self.tenant(),
            repo = repo.display(),
            dir = self.dir.path().display(),
            pg_host = self.services.pg_host,
            pg_port = self.services.pg_port,
            database = self.database,
            pg_user = self.services.pg_user,
            pg_password_var = PG_PASSWORD_VAR,
            s3_endpoint = self.services.s3_endpoint,
            bucket = self.bucket,
            s3_key_var = S3_KEY_VAR,
            s3_secret_var = S3_SECRET_VAR,
            models = MODELS.map(|m| format!("    \"{m}\",")).join("\n"),
        );
        std::fs::write(&self.manifest, edit(text)).unwrap();
    }

    /// Rewrites the manifest so that its Postgres source points at a closed port on
    /// loopback (an unreachable database), with `attempts` fetch attempts in all when
    /// given (the harness default is 3). Returns the port.
    pub fn break_postgres(&self, attempts: Option<u32>) -> u16 {
        let closed = ClosedPort::new();
        let port = closed.port;
        self.closed_ports.borrow_mut().push(closed);
        self.write_manifest(|m| {
            let m = swap(
                m,
                &format!("port = \"{}\"", self.services.pg_port),
                &format!("port = \"{port}\""),
            );
            match attempts {
                Some(n) => swap(m, "attempts = 3", &format!("attempts = {n}")),
                None => m,
            }
        });
        port
    }

    /// Every secret the tenant's runs are given.
    pub fn secrets(&self) -> Vec<String> {
        let mut all = vec![
            self.services.pg_password.clone(),
            self.services.s3_access_key.clone(),
            self.services.s3_secret_key.clone(),
        ];
        all.extend(self.env.iter().map(|(_, v)| v.clone()));
        all
    }

    pub fn pg_target(&self) -> PgTarget {
        PgTarget {
            host: self.services.pg_host.clone(),
            port: self.services.pg_port,
            user: self.services.pg_user.clone(),
            password: self.services.pg_password.clone(),
            database: self.database.clone(),
        }
    }

    pub fn bucket_target(&self) -> BucketTarget {
        BucketTarget {
            endpoint: self.services.s3_endpoint.clone(),
            region: "us-east-1".into(),
            bucket: self.bucket.clone(),
            access_key_id: self.services.s3_access_key.clone(),
            secret_access_key: self.services.s3_secret_key.clone(),
        }
    }

    pub fn seed_postgres(&self, rows: u64) {
        seed::seed_postgres(&self.pg_target(), rows).unwrap();
    }

    pub fn upload_dir(&self, dir: &Path) {
        seed::upload_dir(&self.bucket_target(), dir).unwrap();
    }

    pub fn put(&self, key: &str, body: &[u8]) {
        self.bucket_target().put(key, body).unwrap();
    }

    /// The tenant's name in its manifest (and in its logs, summary and folders).
    pub fn tenant(&self) -> String {
        self.name.replace('_', "-")
    }

    /// Runs SQL statements on the tenant's Postgres database.
    pub fn pg_execute(&self, sql: &str) {
        self.pg().batch_execute(sql).unwrap();
    }

    /// Inserts rows into the tenant's Postgres `provider` table: `values` lists them as
    /// (provider_id, provider_name, npi, care_site_id, provider_source_value,
    /// specialty_source_value, updated_at).
    pub fn pg_providers(&self, values: &str) {
        self.pg_execute(&format!(
            "insert into provider (provider_id, provider_name, npi, care_site_id, \
             provider_source_value, specialty_source_value, updated_at) values {values}"
        ));
    }

    pub fn pg(&self) -> postgres::Client {
        postgres::Config::new()
            .host(&self.services.pg_host)
            .port(self.services.pg_port)
            .user(&self.services.pg_user)
            .password(&self.services.pg_password)
            .dbname(&self.database)
            .connect(postgres::NoTls)
            .unwrap()
    }

    pub fn lake(&self) -> PathBuf {
        self.dir.path().join("lake")
    }

    /// Runs `etl` with the tenant's secrets in the environment.
    pub fn etl(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `etl` as [`Tenant::etl`] does, started with this umask.
    pub fn etl_with_umask(&self, umask: u32, args: &[&str]) -> Output {
        use std::os::unix::process::CommandExt;
        let mut cmd = self.command(args);
        // SAFETY: umask is async-signal-safe and touches nothing but the child's mask.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(umask as libc::mode_t);
                Ok(())
            });
        }
        cmd.output().unwrap()
    }

    /// The `etl` command with the tenant's secrets in the environment, not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_etl"));
        cmd.args(args)
            .env(PG_PASSWORD_VAR, &self.services.pg_password)
            .env(S3_KEY_VAR, &self.services.s3_access_key)
            .env(S3_SECRET_VAR, &self.services.s3_secret_key)
            .env_remove("ETL_EXTENSION_DIR")
            .env_remove("ETL_LOG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn manifest_arg(&self) -> String {
        self.manifest.display().to_string()
    }

    /// `etl run <manifest> ARGS`, which must succeed.
    pub fn run_ok(&self, args: &[&str]) -> Output {
        let manifest = self.manifest_arg();
        let mut all = vec!["run", manifest.as_str()];
        all.extend_from_slice(args);
        let out = self.etl(&all);
        assert!(
            out.status.success(),
            "etl run failed ({:?}):\n{}\n{}",
            out.status.code(),
            stdout(&out),
            stderr(&out)
        );
        out
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let manifest = self.manifest_arg();
        let mut all = vec!["run", manifest.as_str()];
        all.extend_from_slice(args);
        self.etl(&all)
    }

    /// The last run's summary, `lake/<tenant>/last-run.json`.
    pub fn last_run(&self) -> serde_json::Value {
        let file = self.lake().join("last-run.json");
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
    }

    /// Rows of a published table, every value as text ([`NULL`] for null), in id order.
    pub fn published(&self, table: &str) -> Vec<Vec<String>> {
        let file = self
            .lake()
            .join("omop/current")
            .join(format!("{table}.parquet"));
        assert!(file.exists(), "{} was not published", file.display());
        let conn = duckdb::Connection::open_in_memory().unwrap();
        rows(
            &conn,
            &format!(
                "select * from read_parquet('{}') order by {table}_id",
                file.display()
            ),
        )
    }

    /// Rows of a query against the tenant's lake database, opened read-only.
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        let config = duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap();
        let conn =
            duckdb::Connection::open_with_flags(self.lake().join("lake.duckdb"), config).unwrap();
        rows(&conn, sql)
    }
}

impl Drop for Tenant {
    fn drop(&mut self) {
        let _ = self.bucket_target().delete_bucket();
        if let Ok(mut admin) = postgres::Config::new()
            .host(&self.services.pg_host)
            .port(self.services.pg_port)
            .user(&self.services.pg_user)
            .password(&self.services.pg_password)
            .dbname("postgres")
            .connect(postgres::NoTls)
        {
            let _ = admin.batch_execute(&format!(
                "drop database if exists {} with (force)",
                self.database
            ));
        }
    }
}

/// How a SQL NULL is shown in query results and expected tables: never a text a source
/// could send (the text `NULL` stays `NULL`).
pub const NULL: &str = "∅";

/// Every cell of a query as text, NULL as [`NULL`].
pub fn rows(conn: &duckdb::Connection, sql: &str) -> Vec<Vec<String>> {
    let mut stmt = conn
        // A projection keeps the order of the inner query.
        .prepare(&format!("select columns(*)::varchar from ({sql})"))
        .unwrap();
    let mut out = Vec::new();
    let mut result = stmt.query([]).unwrap();
    while let Some(row) = result.next().unwrap() {
        let n = row.as_ref().column_count();
        out.push(
            (0..n)
                .map(|i| {
                    row.get::<_, Option<String>>(i)
                        .unwrap()
                        .unwrap_or_else(|| NULL.into())
                })
                .collect(),
        );
    }
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Rows written as `a | b | c` lines, for readable expected tables.
pub fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

/// Puts the crontab back as it was when dropped, even when the test fails. While one is
/// alive, no other test of the same binary touches the crontab (they would undo each
/// other's entries).
pub struct CrontabGuard {
    saved: String,
    _only_one: std::sync::MutexGuard<'static, ()>,
}

static CRONTAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl CrontabGuard {
    pub fn save() -> CrontabGuard {
        // a test that failed holding it poisons the lock, not the crontab it restored
        let only_one = CRONTAB.lock().unwrap_or_else(|e| e.into_inner());
        CrontabGuard {
            saved: etl::schedule::read().unwrap(),
            _only_one: only_one,
        }
    }
}

impl Drop for CrontabGuard {
    fn drop(&mut self) {
        etl::schedule::write(&self.saved).unwrap();
    }
}

/// `text` with `from` replaced by `to`; fails the test when `from` is not in it, so that
/// an edit of a manifest cannot silently do nothing when the text it looks for moves.
pub fn swap(text: String, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the text to replace is not there: {from:?}\nin:\n{text}"
    );
    text.replace(from, to)
}

/// A port on loopback that refuses connections for as long as this lives: a socket bound
/// to it that never listens. Holding the binding keeps any other test (a fault proxy, a
/// parallel service) from taking the port, as a bind-then-release port could.
pub struct ClosedPort {
    pub port: u16,
    fd: libc::c_int,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        // SAFETY: plain socket calls on a struct of the right size; the fd is owned here.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            addr.sin_port = 0;
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len);
            assert!(rc == 0, "bind: {}", std::io::Error::last_os_error());
            let mut bound: libc::sockaddr_in = std::mem::zeroed();
            let mut blen = len;
            let rc = libc::getsockname(fd, &mut bound as *mut _ as *mut libc::sockaddr, &mut blen);
            assert!(rc == 0, "getsockname: {}", std::io::Error::last_os_error());
            ClosedPort {
                port: u16::from_be(bound.sin_port),
                fd,
            }
        }
    }
}

impl Drop for ClosedPort {
    fn drop(&mut self) {
        // SAFETY: the fd was opened by `new` and is closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// Every text a run leaves for people and for machines, named by where it is: what the
/// commands given printed, `etl runs`, `etl validate`, a JSON-log run of the same
/// manifest, the run summaries, the tenant's log files and `etl.runs.error`.
pub fn everything_written(t: &Tenant, outputs: &[&Output]) -> Vec<(String, String)> {
    let mut texts = Vec::new();
    for (i, out) in outputs.iter().enumerate() {
        texts.push((format!("stdout of command {i}"), stdout(out)));
        texts.push((format!("stderr of command {i}"), stderr(out)));
    }
    let m = t.manifest_arg();
    for (what, args) in [
        ("etl runs", vec!["runs", m.as_str()]),
        ("etl validate", vec!["validate", m.as_str()]),
        (
            "etl --log-format json run",
            vec!["--log-format", "json", "run", m.as_str()],
        ),
    ] {
        let out = t.etl(&args);
        texts.push((format!("stdout of {what}"), stdout(&out)));
        texts.push((format!("stderr of {what}"), stderr(&out)));
    }
    let lake = t.lake();
    let mut files = vec![lake.join("last-run.json")];
    for dir in ["runs", "logs"] {
        if let Ok(entries) = std::fs::read_dir(lake.join(dir)) {
            files.extend(entries.map(|e| e.unwrap().path()));
        }
    }
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        texts.push((file.display().to_string(), text));
    }
    let errors = t.query("select coalesce(error, '') from etl.runs order by started_at");
    texts.push((
        "etl.runs.error".into(),
        errors.into_iter().flatten().collect::<Vec<_>>().join("\n"),
    ));
    texts
}

/// Asserts that no secret the tenant's runs were given is in anything they wrote, and that
/// `expected` (the failure) is: the search looked where the failure was reported.
pub fn assert_no_secret_anywhere(t: &Tenant, outputs: &[&Output], expected: &str) {
    let texts = everything_written(t, outputs);
    for secret in t.secrets() {
        for (place, text) in &texts {
            assert!(
                !text.contains(&secret),
                "a secret leaked into {place}:\n{text}"
            );
        }
    }
    for place in [
        "last-run.json",
        "etl.runs.error",
        "stderr of etl --log-format json run",
        "etl.log",
        "stdout of etl runs",
    ] {
        assert!(
            texts
                .iter()
                .any(|(p, text)| p.ends_with(place) && text.contains(expected)),
            "{place} does not report the failure {expected:?}: {texts:#?}"
        );
    }
}

/// Everything the transform decides, without run ids: the OMOP tables, the quarantine, the
/// flags, each row's fate, the clusters, the possible duplicates and the last run's
/// reconciliation.
pub fn decisions(t: &Tenant) -> Vec<Vec<Vec<String>>> {
    [
        "select * from omop.provider order by all",
        "select * from omop.care_site order by all",
        // (a twin's objects were written a second apart: their times differ)
        "select * replace (regexp_replace(record::varchar, '\"_last_modified\":\"[^\"]*\"', '') as record) \
         from staged.quarantine order by all",
        "select * from staged.dq_flags order by all",
        "select * from staged.provider_row_status order by all",
        "select * from staged.provider_clusters order by all",
        "select * from staged.possible_duplicates order by all",
        "select * exclude (run_id) from etl.reconciliation \
         where run_id = (select max(run_id) from etl.reconciliation) order by all",
        "select * exclude (first_run_id) from etl.provider_keys order by all",
    ]
    .iter()
    .map(|sql| t.query(sql))
    .collect()
}

/// Asserts two tenants' decisions are the same, showing only the rows that differ.
pub fn same_decisions(a: &[Vec<Vec<String>>], b: &[Vec<Vec<String>>], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: as many queries");
    for (i, (a, b)) in a.iter().zip(b).enumerate() {
        if a != b {
            let only_a: Vec<_> = a.iter().filter(|r| !b.contains(r)).collect();
            let only_b: Vec<_> = b.iter().filter(|r| !a.contains(r)).collect();
            panic!(
                "{what}, query {i}: only in the first {only_a:?}\nonly in the second {only_b:?}"
            );
        }
    }
}

/// Copies a folder and everything in it.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The header of the sample's provider files.
pub const PROVIDERS_HEADER: &str =
    "ProviderName,ProviderID,NPI,Specialty,SiteName,SourceID,SpecSource,IDSource\n";

/// A provider file as the sample's client sends it: the header, then `rows`.
pub fn providers_csv(rows: &str) -> Vec<u8> {
    format!("{PROVIDERS_HEADER}{rows}").into_bytes()
}
