//! Sample data for the demo, the tests and the benchmark: the tenant's Postgres tables
//! (the exercise's DDL plus `updated_at`) and the files a client drops in its bucket.
//!
//! The first rows are written by hand, each with the bad data it stands for (see
//! docs/data-quality.md); `rows` beyond them are synthetic and loaded with COPY, so
//! millions take seconds.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use etl::manifest::{OnBadFile, S3Source, Secret, UrlStyle};
use etl::sources::s3;

#[derive(Clone)]
pub struct PgTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
}

impl PgTarget {
    pub fn client(&self) -> Result<postgres::Client> {
        postgres::Config::new()
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.database)
            .connect_timeout(std::time::Duration::from_secs(10))
            .connect(postgres::NoTls)
            .with_context(|| {
                format!(
                    "cannot connect to postgres {}:{}, database {}, user {}",
                    self.host, self.port, self.database, self.user
                )
            })
    }
}

/// The source schema. No foreign key from provider to care_site: the clients' systems
/// often have none, and the pipeline must cope with a provider naming a missing site.
/// `npi` is wider than 10 so formatted values ('123-456-7893') arrive as sent.
const SCHEMA: &str = "
drop table if exists provider;
drop table if exists care_site;
create table care_site (
    care_site_id serial primary key,
    care_site_name varchar(255),
    place_of_service_concept_id integer,
    location_id integer,
    care_site_source_value varchar(50),
    place_of_service_source_value varchar(50),
    updated_at timestamptz not null default now()
);
create table provider (
    provider_id serial primary key,
    provider_name varchar(255) not null,
    npi varchar(20),
    provider_type_concept_id integer,
    specialty_concept_id integer,
    care_site_id integer,
    provider_source_value varchar(50),
    specialty_source_value varchar(50),
    updated_at timestamptz not null default now()
);
create index on provider (updated_at);
create index on care_site (updated_at);
";

/// Hand-written care sites: (name, place of service concept, location, source value,
/// place of service source value, updated_at). Ids are 1..=10 in this order.
#[allow(clippy::type_complexity)]
pub const CARE_SITES: &[(Option<&str>, Option<i32>, i32, &str, &str, &str)] = &[
    (
        Some("City Hospital"),
        Some(8717),
        1,
        "CS001",
        "Inpatient Hospital",
        "2026-11-05 09:00:00+00",
    ),
    (
        Some("Village Clinic"),
        Some(8716),
        2,
        "CS002",
        "Independent Clinic",
        "2026-11-01 09:00:00+00",
    ),
    // place of service concept missing: mapped from its source value
    (
        Some("Metro Med"),
        None,
        3,
        "CS003",
        "Outpatient Hospital",
        "2026-11-01 09:00:00+00",
    ),
    (
        Some("Suburban Health"),
        Some(8940),
        4,
        "CS004",
        "Office",
        "2026-11-01 09:00:00+00",
    ),
    // stray spaces and lower case: matched to "Downtown Health" in the files
    (
        Some("  downtown   health "),
        Some(8756),
        5,
        "CS005",
        "Outpatient Hospital",
        "2026-11-01 09:00:00+00",
    ),
    (
        Some("North Health Institute"),
        Some(8756),
        6,
        "CS006",
        "Outpatient Hospital",
        "2026-11-01 09:00:00+00",
    ),
    // the same site again under another case, older: merged into City Hospital
    (
        Some("CITY HOSPITAL"),
        Some(8717),
        1,
        "CS007",
        "Inpatient Hospital",
        "2026-10-01 09:00:00+00",
    ),
    // concept disagrees with its source value (8870 is Emergency Room): vocabulary wins
    (
        Some("Eastside Urgent Care"),
        Some(8870),
        8,
        "CS008",
        "Urgent Care Facility",
        "2026-11-01 09:00:00+00",
    ),
    // a place of service the vocabulary does not know: concept 0
    (
        Some("Lakeside Lab"),
        None,
        9,
        "CS009",
        "Lab",
        "2026-11-01 09:00:00+00",
    ),
    // no name at all
    (
        None,
        Some(8940),
        10,
        "CS010",
        "Office",
        "2026-11-01 09:00:00+00",
    ),
];

/// Hand-written providers: (name, npi, specialty concept, care site id, source value,
/// specialty source value, updated_at). Ids are 1..=10 in this order.
#[allow(clippy::type_complexity)]
pub const PROVIDERS: &[(
    &str,
    Option<&str>,
    Option<i32>,
    Option<i32>,
    &str,
    &str,
    &str,
)] = &[
    (
        "John Doe",
        Some("1234567890"),
        Some(38004451),
        Some(1),
        "JD001",
        "Cardiology",
        "2026-11-02 10:00:00+00",
    ),
    (
        "Jane Smith",
        Some("2345678901"),
        Some(38004477),
        Some(2),
        "JS002",
        "Pediatrics",
        "2026-11-02 10:00:00+00",
    ),
    (
        "Alice Nguyen",
        Some("1841293750"),
        Some(38004456),
        Some(4),
        "AN101",
        "Internal Medicine",
        "2026-11-02 10:00:00+00",
    ),
    // stray spaces
    (
        "  robert   KING ",
        Some("1203456789"),
        Some(38004446),
        Some(3),
        "RK102",
        "General Practice",
        "2026-11-02 10:00:00+00",
    ),
    // the text NULL as a name, and nobody else names this provider: quarantined
    (
        "NULL",
        Some("1678901236"),
        Some(38004452),
        Some(5),
        "XX103",
        "Dermatology",
        "2026-11-02 10:00:00+00",
    ),
    // blank name; the files know this provider (MB007) but without a name either
    (
        "   ",
        None,
        Some(38004465),
        Some(5),
        "MB007",
        "Ortho",
        "2026-11-02 10:00:00+00",
    ),
    // NPI with dashes: digits kept, valid
    (
        "Maria Lopez",
        Some("123-456-7893"),
        Some(38004453),
        Some(6),
        "ML104",
        "Family Practice",
        "2026-11-02 10:00:00+00",
    ),
    // NPI of 5 digits: not an NPI, left empty
    (
        "Tom Baker",
        Some("98765"),
        Some(38004469),
        Some(8),
        "TB105",
        "Psychiatry",
        "2026-11-02 10:00:00+00",
    ),
    // care site 99 does not exist
    (
        "Grace Hopper",
        Some("1456789019"),
        Some(38004458),
        Some(99),
        "GH106",
        "Neurology",
        "2026-11-02 10:00:00+00",
    ),
    // title and credentials around the name; a specialty the vocabulary does not know;
    // care site 7 is the duplicate of City Hospital
    (
        "Dr. Alan Smithee MD",
        Some("1934567896"),
        None,
        Some(7),
        "AS107",
        "Sports Med",
        "2026-11-02 10:00:00+00",
    ),
];

const FIRST: &[&str] = &[
    "James", "Mary", "Robert", "Patricia", "Michael", "Linda", "David", "Barbara", "Wei", "Fatima",
    "Carlos", "Aisha", "Ivan", "Sofia", "Kenji", "Amara",
];
const LAST: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Chen", "Khan",
    "Lopez", "Okafor", "Petrov", "Rossi", "Tanaka", "Mensah",
];
const SPECIALTIES: &[(&str, i32)] = &[
    ("Cardiology", 38004451),
    ("Peds", 38004477),
    ("Neurology", 38004458),
    ("Ortho", 38004465),
    ("Dermatology", 38004452),
    ("General Practice", 38004446),
    ("Int Med", 38004456),
    ("Family Practice", 38004453),
    ("Emergency Medicine", 38004510),
    ("Psychiatry", 38004469),
    ("Oncology", 0),
];
const PLACES: &[(&str, i32)] = &[
    ("Inpatient Hospital", 8717),
    ("Outpatient Hospital", 8756),
    ("Office", 8940),
    ("Independent Clinic", 8716),
    ("Urgent Care Facility", 8782),
];

/// The NPI check digit: Luhn over '80840' followed by the nine digits.
pub fn npi_check_digit(nine: &str) -> u32 {
    let digits = format!("80840{nine}");
    let sum: u32 = digits
        .chars()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = c.to_digit(10).unwrap_or(0);
            if i % 2 == 0 {
                let x = d * 2;
                x / 10 + x % 10
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// A deterministic stream of pseudo-random numbers (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn csv_field(s: Option<&str>) -> String {
    match s {
        None => String::new(),
        Some(v) => format!("\"{}\"", v.replace('"', "\"\"")),
    }
}

/// A synthetic provider for row `i` (1-based beyond the hand-written ones): a name, a
/// mostly valid NPI, a specialty and a site. About 1% carry a bad NPI check digit.
pub fn synthetic_provider(i: u64, sites: u64) -> (String, String, &'static str, i32, u64, String) {
    let mut rng = Rng(i);
    let name = format!(
        "{} {}",
        FIRST[rng.below(FIRST.len() as u64) as usize],
        LAST[rng.below(LAST.len() as u64) as usize]
    );
    let nine = format!("1{:08}", i % 100_000_000);
    let check = npi_check_digit(&nine);
    let check = if rng.below(100) == 0 {
        (check + 1) % 10
    } else {
        check
    };
    let (specialty, concept) = SPECIALTIES[rng.below(SPECIALTIES.len() as u64) as usize];
    let site = 1 + rng.below(sites);
    (
        name,
        format!("{nine}{check}"),
        specialty,
        concept,
        site,
        format!("P{i:09}"),
    )
}

/// Creates and fills the tenant's source tables; `rows` providers in all (at least the
/// hand-written ones). Care sites: the hand-written ten, plus one per thousand providers.
pub fn seed_postgres(target: &PgTarget, rows: u64) -> Result<(u64, u64)> {
    let mut client = target.client()?;
    client
        .batch_execute(SCHEMA)
        .context("cannot create the source tables")?;

    let extra_sites = rows / 1000;
    let mut buf = Vec::new();
    for (i, (name, pos, location, source, pos_source, updated)) in CARE_SITES.iter().enumerate() {
        writeln!(
            buf,
            "{},{},{},{},{},{},{}",
            i + 1,
            csv_field(*name),
            pos.map(|p| p.to_string()).unwrap_or_default(),
            location,
            csv_field(Some(source)),
            csv_field(Some(pos_source)),
            updated
        )?;
    }
    for j in 0..extra_sites {
        let id = CARE_SITES.len() as u64 + j + 1;
        let (place, concept) = PLACES[(j % PLACES.len() as u64) as usize];
        writeln!(
            buf,
            "{id},\"Site {id}\",{concept},{id},\"CS{id:06}\",\"{place}\",2026-11-01 09:00:00+00"
        )?;
    }
    copy_in(&mut client, "care_site (care_site_id, care_site_name, place_of_service_concept_id, location_id, care_site_source_value, place_of_service_source_value, updated_at)", &buf)?;
    let sites = CARE_SITES.len() as u64 + extra_sites;

    let mut writer = client
        .copy_in("copy provider (provider_id, provider_name, npi, provider_type_concept_id, specialty_concept_id, care_site_id, provider_source_value, specialty_source_value, updated_at) from stdin with (format csv)")
        .context("cannot start COPY into provider")?;
    let mut line = String::new();
    for (i, (name, npi, concept, site, source, specialty, updated)) in PROVIDERS.iter().enumerate()
    {
        line.clear();
        line.push_str(&format!(
            "{},{},{},,{},{},{},{},{}\n",
            i + 1,
            csv_field(Some(name)),
            csv_field(*npi),
            concept.map(|c| c.to_string()).unwrap_or_default(),
            site.map(|s| s.to_string()).unwrap_or_default(),
            csv_field(Some(source)),
            csv_field(Some(specialty)),
            updated
        ));
        writer.write_all(line.as_bytes())?;
    }
    let total = rows.max(PROVIDERS.len() as u64);
    for id in PROVIDERS.len() as u64 + 1..=total {
        let (name, npi, specialty, concept, site, source) = synthetic_provider(id, sites);
        line.clear();
        line.push_str(&format!(
            "{id},{name},{npi},,{concept},{site},{source},{specialty},2026-11-01 09:00:00+00\n"
        ));
        writer.write_all(line.as_bytes())?;
    }
    writer.finish().context("COPY into provider failed")?;
    client.batch_execute(
        "select setval('care_site_care_site_id_seq', (select max(care_site_id) from care_site));
         select setval('provider_provider_id_seq', (select max(provider_id) from provider));
         analyze care_site; analyze provider;",
    )?;
    Ok((sites, total))
}

/// Adds `count` synthetic providers after the highest id, updated now: new data for an
/// incremental run.
pub fn append_providers(target: &PgTarget, count: u64) -> Result<u64> {
    let mut client = target.client()?;
    let row = client.query_one(
        "select coalesce(max(provider_id), 0)::bigint, (select count(*) from care_site)::bigint from provider",
        &[],
    )?;
    let (max, sites): (i64, i64) = (row.get(0), row.get(1));
    let mut writer = client.copy_in(
        "copy provider (provider_id, provider_name, npi, provider_type_concept_id, specialty_concept_id, care_site_id, provider_source_value, specialty_source_value, updated_at) from stdin with (format csv)",
    )?;
    for id in max as u64 + 1..=max as u64 + count {
        let (name, npi, specialty, concept, site, source) =
            synthetic_provider(id, sites.max(1) as u64);
        writer.write_all(
            format!(
                "{id},{name},{npi},,{concept},{site},{source},{specialty},{}\n",
                chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.6f+00")
            )
            .as_bytes(),
        )?;
    }
    writer.finish()?;
    Ok(count)
}

/// Provider files as a client sends them: rows `first..first+rows` of the synthetic
/// providers (so most are also in Postgres), split over `csv` CSV objects and `json` NDJSON
/// objects under `prefix`. Returns (key, body) pairs.
pub fn provider_files(
    first: u64,
    rows: u64,
    csv: u64,
    json: u64,
    prefix: &str,
    sites: u64,
) -> Vec<(String, Vec<u8>)> {
    let objects = (csv + json).max(1);
    let per = rows.div_ceil(objects);
    let mut out = Vec::new();
    for o in 0..objects {
        let start = first + o * per;
        let end = (start + per).min(first + rows);
        let is_json = o >= csv;
        let mut body = Vec::with_capacity(((end - start) * 100) as usize);
        if !is_json {
            body.extend_from_slice(
                b"ProviderName,ProviderID,NPI,Specialty,SiteName,SourceID,SpecSource,IDSource\n",
            );
        }
        for i in start..end {
            let (name, npi, specialty, _, site, source) = synthetic_provider(i, sites);
            let site_name = if site <= CARE_SITES.len() as u64 {
                "City Hospital".to_string()
            } else {
                format!("Site {site}")
            };
            if is_json {
                let record = serde_json::json!({
                    "ProviderName": name, "ProviderID": format!("{i:07}"), "NPI": npi, "Specialty": specialty,
                    "SiteName": site_name, "SourceID": source, "SpecSource": specialty, "IDSource": "BENCH",
                });
                body.extend_from_slice(record.to_string().as_bytes());
                body.push(b'\n');
            } else {
                body.extend_from_slice(
                    format!(
                        "{name},{i:07},{npi},{specialty},{site_name},{source},{specialty},BENCH\n"
                    )
                    .as_bytes(),
                );
            }
        }
        let key = if is_json {
            format!("{prefix}part-{o:03}.ndjson")
        } else {
            format!("{prefix}part-{o:03}.csv")
        };
        out.push((key, body));
    }
    out
}

fn copy_in(client: &mut postgres::Client, target: &str, data: &[u8]) -> Result<()> {
    let mut writer = client
        .copy_in(&format!("copy {target} from stdin with (format csv)"))
        .with_context(|| format!("cannot start COPY into {target}"))?;
    writer.write_all(data)?;
    writer
        .finish()
        .with_context(|| format!("COPY into {target} failed"))?;
    Ok(())
}

pub struct BucketTarget {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl BucketTarget {
    pub fn source(&self) -> S3Source {
        S3Source {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            bucket: self.bucket.clone(),
            prefix: String::new(),
            access_key_id: Secret::new(self.access_key_id.clone()),
            secret_access_key: Secret::new(self.secret_access_key.clone()),
            use_ssl: false,
            url_style: UrlStyle::Path,
            table: "provider".into(),
            columns: Vec::new(),
            on_bad_file: OnBadFile::Skip,
            encoding: None,
            layouts: Vec::new(),
        }
    }

    /// Creates the bucket if it does not exist yet.
    pub fn ensure_bucket(&self) -> Result<()> {
        let source = self.source();
        let bucket = s3::bucket(&source)?;
        if bucket.exists().unwrap_or(false) {
            return Ok(());
        }
        let credentials = s3::bucket(&source)?
            .credentials()
            .map_err(|e| anyhow!("{e}"))?;
        ::s3::Bucket::create_with_path_style(
            &self.bucket,
            ::s3::Region::Custom {
                region: self.region.clone(),
                endpoint: format!("http://{}", self.endpoint.trim_start_matches("http://")),
            },
            credentials,
            ::s3::BucketConfiguration::default(),
        )
        .map_err(|e| anyhow!("cannot create bucket {}: {e}", self.bucket))?;
        Ok(())
    }

    /// Uploads an object, retrying what the server says is temporary (5xx, 429).
    pub fn put(&self, key: &str, body: &[u8]) -> Result<()> {
        let bucket = s3::bucket(&self.source())?;
        let mut delay = std::time::Duration::from_millis(200);
        for attempt in 1.. {
            match bucket.put_object(key, body) {
                Ok(_) => return Ok(()),
                Err(::s3::error::S3Error::HttpFailWithBody(status, _))
                    if (status >= 500 || status == 429) && attempt < 6 =>
                {
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(e) => return Err(anyhow!("cannot upload s3://{}/{key}: {e}", self.bucket)),
            }
        }
        unreachable!("the loop returns")
    }

    /// Deletes the bucket and everything in it.
    pub fn delete_bucket(&self) -> Result<()> {
        self.clear("")?;
        let bucket = s3::bucket(&self.source())?;
        bucket
            .delete()
            .map_err(|e| anyhow!("cannot delete bucket {}: {e}", self.bucket))?;
        Ok(())
    }

    pub fn delete(&self, key: &str) -> Result<()> {
        let bucket = s3::bucket(&self.source())?;
        bucket
            .delete_object(key)
            .map_err(|e| anyhow!("cannot delete s3://{}/{key}: {e}", self.bucket))?;
        Ok(())
    }

    /// Removes every object under a prefix.
    pub fn clear(&self, prefix: &str) -> Result<usize> {
        let mut source = self.source();
        source.prefix = prefix.to_string();
        let objects = s3::list(&source)?;
        for o in &objects {
            self.delete(&o.key)?;
        }
        Ok(objects.len())
    }
}

/// Uploads every file under `dir` with its relative path as the key.
pub fn upload_dir(target: &BucketTarget, dir: &Path) -> Result<Vec<String>> {
    target.ensure_bucket()?;
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    let mut keys = Vec::new();
    for file in files {
        let key = file
            .strip_prefix(dir)
            .expect("collected under dir")
            .to_string_lossy()
            .replace('\\', "/");
        let body =
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        target.put(&key, &body)?;
        keys.push(key);
    }
    Ok(keys)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Tenant `beta`: a partner shaped differently (pipelines/beta.toml maps it).

/// Beta's source schema: practitioners and clinics, under its own names.
const BETA_SCHEMA: &str = "
drop table if exists practitioner;
drop table if exists clinic;
create table clinic (
    clinic_id integer primary key,
    clinic_code varchar(20),
    clinic_name varchar(200),
    setting varchar(60),
    modified timestamptz not null default now()
);
create table practitioner (
    practitioner_id integer primary key,
    full_name varchar(200),
    npi_number varchar(20),
    staff_code varchar(20),
    specialty_text varchar(80),
    clinic_ref integer,
    modified timestamptz not null default now()
);
create index on practitioner (modified);
create index on clinic (modified);
";

/// Beta's clinics: (id, code, name, setting). A clinic without a name is kept by its code.
pub const BETA_CLINICS: &[(i32, &str, Option<&str>, &str)] = &[
    (1, "NFC", Some("Northside Family Clinic"), "Office"),
    (2, "HHC", Some("Harbor Heart Center"), "Outpatient Hospital"),
    (
        3,
        "RUC",
        Some("Riverside Urgent Care"),
        "Urgent Care Facility",
    ),
    (4, "OTC", Some("Old Town Clinic"), "Independent Clinic"),
    (5, "LAB", None, "Lab"),
];

/// Beta's practitioners: (id, full name, NPI, staff code, specialty, clinic). Planted: a
/// title and credential, a missing NPI known by staff code, a blank name, a formatted NPI,
/// a clinic that does not exist, a lower-case specialty.
#[allow(clippy::type_complexity)]
pub const BETA_PRACTITIONERS: &[(i32, &str, Option<&str>, &str, &str, Option<i32>)] = &[
    (
        1,
        "Maria Lopez",
        Some("1234567893"),
        "B-1001",
        "Family Practice",
        Some(1),
    ),
    (
        2,
        "Dr. Tomas Reyes MD",
        Some("1987654326"),
        "B-1002",
        "Cardiology",
        Some(2),
    ),
    (3, "Priya Natarajan", None, "B-1003", "neurology", Some(2)),
    (4, "   ", Some("1222222220"), "B-1007", "Derma", Some(4)),
    (
        5,
        "Sam Ortiz",
        Some("145-678-9016"),
        "B-1008",
        "Int Med",
        Some(9),
    ),
    (
        6,
        "Lee Chen",
        Some("1444444447"),
        "B-1005",
        "Pediatric Medicine",
        Some(3),
    ),
];

/// Creates and fills beta's tables: `rows` practitioners in all (at least the hand-written
/// ones), the hand-written clinics plus one per thousand practitioners.
pub fn seed_beta_postgres(target: &PgTarget, rows: u64) -> Result<(u64, u64)> {
    let mut client = target.client()?;
    client
        .batch_execute(BETA_SCHEMA)
        .context("cannot create beta's source tables")?;
    let mut buf = Vec::new();
    for (id, code, name, setting) in BETA_CLINICS {
        writeln!(
            buf,
            "{id},{},{},{},2026-11-03 08:00:00+00",
            csv_field(Some(code)),
            csv_field(*name),
            csv_field(Some(setting))
        )?;
    }
    let extra_sites = rows / 1000;
    for j in 0..extra_sites {
        let id = BETA_CLINICS.len() as u64 + j + 1;
        let (place, _) = PLACES[(j % PLACES.len() as u64) as usize];
        writeln!(
            buf,
            "{id},\"C{id:05}\",\"Clinic {id}\",\"{place}\",2026-11-01 09:00:00+00"
        )?;
    }
    copy_in(
        &mut client,
        "clinic (clinic_id, clinic_code, clinic_name, setting, modified)",
        &buf,
    )?;
    let sites = BETA_CLINICS.len() as u64 + extra_sites;
    let mut buf = Vec::new();
    for (id, name, npi, staff, specialty, clinic) in BETA_PRACTITIONERS {
        writeln!(
            buf,
            "{id},{},{},{},{},{},2026-11-04 12:00:00+00",
            csv_field(Some(name)),
            csv_field(*npi),
            csv_field(Some(staff)),
            csv_field(Some(specialty)),
            clinic.map(|c| c.to_string()).unwrap_or_default()
        )?;
    }
    let total = rows.max(BETA_PRACTITIONERS.len() as u64);
    for id in BETA_PRACTITIONERS.len() as u64 + 1..=total {
        let (name, npi, specialty, _, site, _) = synthetic_provider(id, sites);
        writeln!(
            buf,
            "{id},{name},{npi},B-{id:07},{specialty},{site},2026-11-01 09:00:00+00"
        )?;
    }
    copy_in(
        &mut client,
        "practitioner (practitioner_id, full_name, npi_number, staff_code, specialty_text, clinic_ref, modified)",
        &buf,
    )?;
    client.batch_execute("analyze clinic; analyze practitioner;")?;
    Ok((sites, total))
}

/// Creates the database `target` names when it does not exist (the role may create
/// databases), connecting to `postgres` as the same role.
pub fn ensure_database(target: &PgTarget) -> Result<()> {
    let admin = PgTarget {
        database: "postgres".into(),
        ..target.clone()
    };
    let mut client = admin.client()?;
    let exists = client
        .query_opt(
            "select 1 from pg_database where datname = $1",
            &[&target.database],
        )?
        .is_some();
    if !exists {
        client.batch_execute(&format!(
            "create database \"{}\"",
            target.database.replace('"', "\"\"")
        ))?;
    }
    Ok(())
}

/// Copies beta's sample files (fixtures/beta/drop) into its drop folder, replacing what was
/// there. Returns the files' paths under the folder.
pub fn fill_drop_folder(sample: &Path, folder: &Path) -> Result<Vec<String>> {
    if folder.exists() {
        std::fs::remove_dir_all(folder)
            .with_context(|| format!("cannot empty {}", folder.display()))?;
    }
    let mut files = Vec::new();
    collect_files(sample, &mut files)?;
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let rel = file.strip_prefix(sample).unwrap_or(&file);
        let target = folder.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::copy(&file, &target)
            .with_context(|| format!("cannot copy {} to {}", file.display(), target.display()))?;
        out.push(rel.display().to_string());
    }
    Ok(out)
}
