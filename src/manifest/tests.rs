use std::collections::BTreeSet;

use super::wire::ManifestWire;
use super::*;

/// A project folder with the layout a manifest expects: pipelines/, sql/models, vocab/, and
/// the project's own DDL (the OMOP tables a publish step may name).
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        for d in ["pipelines", "sql/models/staged", "sql/ddl", "vocab"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("sql/models/staged/a.sql"), "select 1").unwrap();
        let ddl = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/ddl/etl.sql");
        std::fs::copy(ddl, dir.path().join("sql/ddl/etl.sql")).unwrap();
        Project { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("pipelines/t.toml")
    }

    fn parse(&self, text: &str) -> Result<Manifest, ManifestError> {
        parse(&self.path(), text, |name| match name {
            "PG_PASSWORD" => Some("s3cret".to_string()),
            _ => None,
        })
    }

    /// The error report with the temp folder replaced by `<project>`.
    fn error(&self, text: &str) -> String {
        let err = self
            .parse(text)
            .expect_err("the manifest should be refused");
        err.to_string()
            .replace(&self.dir.path().display().to_string(), "<project>")
    }
}

const GOOD: &str = r#"tenant = "acme"

[sources.pg]
kind = "postgres"
host = "${PG_HOST:-127.0.0.1}"
port = "${PG_PORT:-5432}"
database = "acme"
user = "etl"
password = "${PG_PASSWORD}"
tables = ["care_site", "provider"]

[sources.files]
kind = "s3"
endpoint = "127.0.0.1:8333"
bucket = "acme"
access_key_id = "${S3_KEY:-local}"
secret_access_key = "${S3_SECRET:-local-secret}"
columns = ["ProviderName"]

[[steps]]
name = "extract_postgres"
extract = "pg"

[[steps]]
name = "transform"
sql = ["staged/a.sql"]

[[steps]]
name = "publish"
publish = ["provider"]
"#;

#[test]
fn a_good_manifest_compiles_with_defaults_and_environment() {
    let project = Project::new();
    let m = project.parse(GOOD).unwrap();
    assert_eq!(m.tenant, "acme");
    assert_eq!(m.steps.len(), 3);
    let SourceKind::Postgres(pg) = &m.source("pg").unwrap().kind else {
        panic!("pg is a postgres source")
    };
    assert_eq!(pg.host, "127.0.0.1");
    assert_eq!(pg.port, 5432);
    assert_eq!(pg.password.expose(), "s3cret");
    assert_eq!(pg.schema, "public");
    assert_eq!(format!("{:?}", pg.password), "***");
    let SourceKind::S3(s3) = &m.source("files").unwrap().kind else {
        panic!("files is an s3 source")
    };
    assert_eq!(s3.region, "us-east-1");
    assert_eq!(s3.url_style, UrlStyle::Path);
    assert_eq!(s3.on_bad_file, OnBadFile::Skip);
    assert_eq!(m.lake_dir, project.dir.path().join("lake/acme"));
    assert!(m.secrets().contains(&"s3cret".to_string()));
}

#[test]
fn unknown_key_names_line_column_and_the_near_name() {
    let project = Project::new();
    let text = GOOD.replace("host = ", "hots = ");
    assert_eq!(
        project.error(&text),
        "<project>/pipelines/t.toml has 1 problem:

error: unknown field `hots`, expected one of `kind`, `host`, `port`, `database`, `user`, `password`, `schema`, `tables`, `cursor`, `keys`, `lookback_seconds`, `snapshot`, `detect_deletes`, `endpoint`, `region`, `bucket`, `prefix`, `access_key_id`, `secret_access_key`, `use_ssl`, `url_style`, `table`, `columns`, `on_bad_file`, `encoding`, `path`, `settle_seconds`, `map`, `layouts`
 --> <project>/pipelines/t.toml:5:1
  |
5 | hots = \"${PG_HOST:-127.0.0.1}\"
  | ^^^^
help: did you mean `host`?
"
    );
}

#[test]
fn every_shape_problem_is_reported_at_once() {
    let project = Project::new();
    let text = GOOD
        .replace("user = \"etl\"", "usr = \"etl\"")
        .replace("bucket = \"acme\"", "bucket = 42")
        .replace("name = \"transform\"", "name = \"transform\"\nsq = 1");
    let report = project.error(&text);
    assert!(
        report.starts_with("<project>/pipelines/t.toml has 3 problems:"),
        "{report}"
    );
    assert!(report.contains("unknown field `usr`"), "{report}");
    assert!(report.contains("t.toml:8:1"), "{report}");
    assert!(
        report.contains("invalid type: integer `42`, expected a string"),
        "{report}"
    );
    assert!(report.contains("t.toml:15:10"), "{report}");
    assert!(report.contains("unknown field `sq`"), "{report}");
    assert!(report.contains("t.toml:26:1"), "{report}");
    // in the order of the file
    assert!(
        report.find("`usr`").unwrap() < report.find("`42`").unwrap(),
        "{report}"
    );
}

#[test]
fn references_files_and_environment_are_all_checked() {
    let project = Project::new();
    let text = GOOD
        .replace("extract = \"pg\"", "extract = \"pgg\"")
        .replace("staged/a.sql", "staged/missing.sql")
        .replace("${PG_PASSWORD}", "${ACME_PG_PASSWORD}")
        .replace("publish = [\"provider\"]", "publish = [\"providers\"]");
    assert_eq!(
        project.error(&text),
        "<project>/pipelines/t.toml has 4 problems:

error: environment variable `ACME_PG_PASSWORD` is not set (needed by `sources.pg.password`)
 --> <project>/pipelines/t.toml:9:12
  |
9 | password = \"${ACME_PG_PASSWORD}\"
  |            ^^^^^^^^^^^^^^^^^^^^^
help: export ACME_PG_PASSWORD=…, or write `${ACME_PG_PASSWORD:-default}` for a default

error: step `extract_postgres` extracts from unknown source `pgg`: the manifest defines `files`, `pg`
  --> <project>/pipelines/t.toml:22:11
   |
22 | extract = \"pgg\"
   |           ^^^^^
help: did you mean `pg`?

error: step `transform`: SQL file <project>/sql/models/staged/missing.sql does not exist
  --> <project>/pipelines/t.toml:26:8
   |
26 | sql = [\"staged/missing.sql\"]
   |        ^^^^^^^^^^^^^^^^^^^^

error: step `publish` publishes unknown table `providers`: expected one of `care_site`, `provider`
  --> <project>/pipelines/t.toml:30:12
   |
30 | publish = [\"providers\"]
   |            ^^^^^^^^^^^
help: did you mean `provider`?
"
    );
}

#[test]
fn keys_of_the_other_source_kind_are_refused() {
    let project = Project::new();
    let text = GOOD.replace(
        "tables = [\"care_site\", \"provider\"]",
        "tables = [\"care_site\", \"provider\"]\nbucket = \"x\"",
    );
    let report = project.error(&text);
    assert!(
        report.contains("error: `sources.pg.bucket` does not apply to a postgres source"),
        "{report}"
    );
    assert!(report.contains("t.toml:4:8"), "{report}");
}

#[test]
fn bad_values_are_explained() {
    let project = Project::new();
    let text = GOOD
        .replace("${PG_PORT:-5432}", "${PG_PORT:-54x}")
        .replace("kind = \"s3\"", "kind = \"s4\"")
        .replace("tenant = \"acme\"", "tenant = \"Acme Corp\"");
    let report = project.error(&text);
    assert!(
        report.contains("tenant \"Acme Corp\" is not a valid tenant name"),
        "{report}"
    );
    assert!(
        report.contains("`sources.pg.port`: \"54x\" is not a port number (1-65535)"),
        "{report}"
    );
    assert!(report.contains("t.toml:6:8"), "{report}");
    assert!(
        report.contains("source `files` has unknown kind \"s4\""),
        "{report}"
    );
    assert!(report.contains("help: did you mean \"s3\"?"), "{report}");
}

#[test]
fn a_syntax_error_points_at_its_place() {
    let project = Project::new();
    let text = GOOD.replace("database = \"acme\"", "database = \"acme");
    let report = project.error(&text);
    assert!(report.contains("t.toml:7:"), "{report}");
}

#[test]
fn steps_need_exactly_one_action_and_unique_names() {
    let project = Project::new();
    let text = GOOD
        .replace("name = \"transform\"", "name = \"publish\"")
        .replace(
            "publish = [\"provider\"]",
            "publish = [\"provider\"]\nextract = \"pg\"",
        );
    let report = project.error(&text);
    assert!(
        report.contains("step name `publish` is used twice"),
        "{report}"
    );
    assert!(
        report.contains(
            "step `publish` must have exactly one of `extract`, `sql` or `publish` (found 2)"
        ),
        "{report}"
    );
}

#[test]
fn paths_are_normalised_lexically() {
    assert_eq!(
        normalize(Path::new("pipelines/../lake/acme")),
        PathBuf::from("lake/acme")
    );
    assert_eq!(normalize(Path::new("../x/./y")), PathBuf::from("../x/y"));
    assert_eq!(normalize(Path::new("/a/b/../c")), PathBuf::from("/a/c"));
}

#[test]
fn the_sample_manifest_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let m = Manifest::load_with(&root.join("pipelines/acme.toml"), |_| None).unwrap();
    assert_eq!(m.tenant, "acme");
    let names: Vec<&str> = m.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["extract_postgres", "extract_files", "transform", "publish"]
    );
}

/// One port setting moves the services, the seeder and the sample manifests together.
#[test]
fn the_sample_manifests_follow_the_services_port_settings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let env = |name: &str| match name {
        "ETL_PG_PORT" => Some("55001".to_string()),
        "ETL_S3_PORT" => Some("9444".to_string()),
        _ => None,
    };
    for (file, s3) in [("acme.toml", true), ("beta.toml", false)] {
        let m = Manifest::load_with(&root.join("pipelines").join(file), env).unwrap();
        for source in &m.sources {
            match &source.kind {
                SourceKind::Postgres(pg) => assert_eq!(pg.port, 55001, "{file}"),
                SourceKind::S3(bucket) => {
                    assert!(s3, "{file}");
                    assert_eq!(bucket.endpoint, "127.0.0.1:9444", "{file}");
                }
                SourceKind::Folder(_) => {}
            }
        }
        // the tenant's own setting still wins
        let own = |name: &str| match name {
            "ACME_PG_PORT" | "BETA_PG_PORT" => Some("55002".to_string()),
            other => env(other),
        };
        let m = Manifest::load_with(&root.join("pipelines").join(file), own).unwrap();
        let pg = m.sources.iter().find_map(|s| match &s.kind {
            SourceKind::Postgres(pg) => Some(pg.port),
            _ => None,
        });
        assert_eq!(pg, Some(55002), "{file}");
    }
}

#[test]
fn a_tenant_extends_a_shared_base_key_by_key() {
    let project = Project::new();
    let dir = project.dir.path().join("pipelines");
    std::fs::write(
        dir.join("_base.toml"),
        GOOD.replace("tenant = \"acme\"\n", ""),
    )
    .unwrap();
    let tenant = "extends = \"_base.toml\"\ntenant = \"beta\"\n\n[sources.pg]\ndatabase = \"beta\"\n\n[retry]\nattempts = 2\n";
    std::fs::write(dir.join("beta.toml"), tenant).unwrap();
    let m = Manifest::load_with(&dir.join("beta.toml"), |name| {
        (name == "PG_PASSWORD").then(|| "pw".to_string())
    })
    .unwrap();
    assert_eq!(m.tenant, "beta");
    assert_eq!(m.steps.len(), 3, "steps come from the base");
    assert_eq!(m.retry.attempts, 2);
    let SourceKind::Postgres(pg) = &m.source("pg").unwrap().kind else {
        panic!()
    };
    assert_eq!(pg.database, "beta", "the tenant's key wins");
    assert_eq!(pg.user, "etl", "the base's other keys stay");
    assert_eq!(m.lake_dir, project.dir.path().join("lake/beta"));

    std::fs::write(dir.join("_base.toml"), "extends = \"other.toml\"\n").unwrap();
    let err = Manifest::load_with(&dir.join("beta.toml"), |_| None).unwrap_err();
    assert!(
        err.to_string()
            .contains("a base manifest cannot extend another"),
        "{err}"
    );
}

/// The keys serde accepts in one table of the manifest, read from its own error message
/// for an unknown key ("unknown field `…`, expected one of `a`, `b`").
fn accepted(prefix: &str) -> BTreeSet<String> {
    let text = format!("{prefix}\nzz_not_a_key = 1\n");
    let err = match toml::from_str::<ManifestWire>(&text) {
        Ok(_) => panic!("zz_not_a_key was accepted"),
        Err(e) => e.message().to_string(),
    };
    let expected = err
        .split("expected")
        .nth(1)
        .unwrap_or_else(|| panic!("{err}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn keys_of(value: &toml::Value) -> BTreeSet<String> {
    value
        .as_table()
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn the_reference_manifest_parses_and_names_every_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("docs/reference.toml");
    Manifest::load_with(&path, |_| None).unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let reference: toml::Value = toml::from_str(&text).unwrap();
    let mut top = keys_of(&reference);
    top.remove("extends"); // handled before the wire types
    let union = |v: &toml::Value| -> BTreeSet<String> {
        match v {
            toml::Value::Table(t) => t.values().flat_map(keys_of).collect(),
            toml::Value::Array(a) => a.iter().flat_map(keys_of).collect(),
            _ => BTreeSet::new(),
        }
    };
    assert_eq!(accepted("tenant = \"t\""), top, "top-level keys");
    for table in ["paths", "engine", "retry", "identity"] {
        assert_eq!(
            accepted(&format!("tenant = \"t\"\n[{table}]")),
            keys_of(&reference[table]),
            "[{table}]"
        );
    }
    assert_eq!(
        accepted("tenant = \"t\"\n[sources.x]\nkind = \"s3\""),
        union(&reference["sources"]),
        "[sources.*]"
    );
    assert_eq!(
        accepted("tenant = \"t\"\n[[steps]]\nname = \"a\""),
        union(&reference["steps"]),
        "[[steps]]"
    );

    // docs/manifest.md shows this very file
    let doc = std::fs::read_to_string(root.join("docs/manifest.md")).unwrap();
    assert!(
        doc.contains(&text),
        "docs/manifest.md must embed docs/reference.toml verbatim"
    );
}

#[test]
fn the_default_batch_follows_the_memory_limit() {
    assert_eq!(default_transform_batch_rows("2GB"), 4_000_000);
    assert_eq!(default_transform_batch_rows("1 GiB"), 2_000_000);
    assert_eq!(default_transform_batch_rows("512MB"), 1_024_000);
    assert_eq!(default_transform_batch_rows("1.5gb"), 3_000_000);
    assert_eq!(default_transform_batch_rows("10MB"), 100_000);
    // DuckDB's other forms: the fixed default
    assert_eq!(default_transform_batch_rows("80%"), 2_000_000);
    assert_eq!(default_transform_batch_rows("lots"), 2_000_000);
}

#[test]
fn transform_batches_default_and_refuse_zero() {
    let project = Project::new();
    let m = project.parse(GOOD).unwrap();
    // 2M rows per GB of the default 2 GB limit
    assert_eq!(m.engine.transform_batch_rows, 4_000_000);
    let text = GOOD.replace(
        "tenant = \"acme\"\n",
        "tenant = \"acme\"\n\n[engine]\nmemory_limit = \"1GB\"\n",
    );
    assert_eq!(
        project.parse(&text).unwrap().engine.transform_batch_rows,
        2_000_000
    );
    let text = GOOD.replace(
        "tenant = \"acme\"\n",
        "tenant = \"acme\"\n\n[engine]\ntransform_batch_rows = 500000\n",
    );
    assert_eq!(
        project.parse(&text).unwrap().engine.transform_batch_rows,
        500_000
    );
    let text = GOOD.replace(
        "tenant = \"acme\"\n",
        "tenant = \"acme\"\n\n[engine]\ntransform_batch_rows = 0\n",
    );
    let report = project.error(&text);
    assert!(
        report.contains("error: `engine.transform_batch_rows` must be at least 1\n --> <project>/pipelines/t.toml:4:24"),
        "{report}"
    );
}

#[test]
fn the_manifest_page_documents_every_field_of_the_staging_contract() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/manifest.md")).unwrap();
    for (entity, fields) in crate::staging::ENTITIES {
        for f in *fields {
            let row = format!(
                "| {entity} | `{}` | {} | {} | {} |",
                f.name,
                f.sql_type,
                if f.required { "yes" } else { "no" },
                f.doc
            );
            assert!(doc.contains(&row), "docs/manifest.md lacks the row:\n{row}");
        }
    }
}

#[test]
fn mappings_name_known_entities_and_fields_and_map_what_the_contract_requires() {
    let project = Project::new();
    let text = GOOD.replace(
        "columns = [\"ProviderName\"]\n",
        "columns = [\"ProviderName\", \"NPI\"]\n\n\
         [sources.files.map.provider]\n\
         npi = \"NPI\"\n\
         speciality = \"ProviderName\"\n\n\
         [sources.files.map.practitioner]\n\
         name = \"ProviderName\"\n",
    );
    let report = project.error(&text);
    assert!(report.contains("has 3 problems"), "{report}");
    assert!(
        report.contains("error: `sources.files.map.practitioner`: the staging contract has no entity `practitioner`; it has `provider`, `care_site`"),
        "{report}"
    );
    assert!(
        report.contains("error: `sources.files.map.provider` does not map `name`, which the staging contract requires (the provider's name as sent)"),
        "{report}"
    );
    assert!(
        report.contains("error: `sources.files.map.provider.speciality`: `speciality` is not a field of the staging contract's provider (did you mean `specialty`?)"),
        "{report}"
    );
}

#[test]
fn each_kind_refuses_the_keys_of_the_others() {
    let project = Project::new();
    // a folder source given a bucket's and a database's keys
    let text = GOOD.replace(
        "[sources.files]\nkind = \"s3\"",
        "[sources.files]\nkind = \"folder\"\npath = \".\"\ncursor = \"x\"",
    );
    let report = project.error(&text);
    for k in [
        "endpoint",
        "bucket",
        "access_key_id",
        "secret_access_key",
        "cursor",
    ] {
        assert!(
            report.contains(&format!(
                "error: `sources.files.{k}` does not apply to a folder source"
            )),
            "{k}: {report}"
        );
    }
    assert!(
        !report.contains("`sources.files.columns` does not apply"),
        "{report}"
    );
    // and the database refuses a folder's
    let text = GOOD.replace("[sources.pg]\n", "[sources.pg]\nsettle_seconds = 1\n");
    assert!(
        project
            .error(&text)
            .contains("error: `sources.pg.settle_seconds` does not apply to a postgres source"),
        "{}",
        project.error(&text)
    );
}

#[test]
fn the_omop_tables_are_those_the_ddl_creates() {
    let project = Project::new();
    let sql = project.dir.path().join("sql");
    assert_eq!(omop_tables(&sql), ["care_site", "provider"]);
    std::fs::write(
        sql.join("ddl/person.sql"),
        "CREATE TABLE IF NOT EXISTS omop.person (person_id integer);",
    )
    .unwrap();
    assert!(omop_tables(&sql).contains(&"person".to_string()));
}

/// In a manifest that extends a base, a problem points at the line of the file that holds
/// it: the tenant's file for what the tenant wrote, the base's for what it did not.
#[test]
fn an_extending_manifest_reports_lines_of_the_file_written() {
    let project = Project::new();
    let dir = project.dir.path().join("pipelines");
    // the base: a wrong bucket URL style the tenant does not override
    let base = GOOD.replace("tenant = \"acme\"\n", "").replace(
        "bucket = \"acme\"\n",
        "bucket = \"acme\"\nurl_style = \"virtual\"\n",
    );
    std::fs::write(dir.join("_base.toml"), &base).unwrap();
    let head = "extends = \"_base.toml\"\ntenant = \"beta\"\n\n# beta's own database,\n# on its own server\n\n\n[sources.pg]\ndatabase = \"beta\"\n";
    let load = |tenant: String| {
        std::fs::write(dir.join("beta.toml"), tenant).unwrap();
        Manifest::load_with(&dir.join("beta.toml"), |name| {
            (name == "PG_PASSWORD").then(|| "pw".to_string())
        })
        .unwrap_err()
        .to_string()
    };
    let beta = dir.join("beta.toml").display().to_string();
    let base_file = dir.join("_base.toml").display().to_string();

    // a misspelt key on line 10 of beta.toml, reported there as the user wrote it
    let err = load(format!("{head}databse = \"typo\"\n"));
    assert!(err.contains(&format!("--> {beta}:10:1\n")), "{err}");
    assert!(err.contains("10 | databse = \"typo\"\n"), "{err}");

    // a bad value of the tenant's, and one of the base's the tenant left alone
    let err = load(format!("{head}\nport = \"x\"\n"));
    assert!(
        err.contains(&format!("--> {beta}:11:8\n")) && err.contains("11 | port = \"x\"\n"),
        "{err}"
    );
    let line = base
        .lines()
        .position(|l| l.starts_with("url_style"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("--> {base_file}:{line}:13\n")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{line} | url_style = \"virtual\"\n")),
        "{err}"
    );
}
