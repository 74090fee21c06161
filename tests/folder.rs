//! A folder source (a local or mounted share an on-premises partner drops files on): the
//! same formats, rejects and ledger as a bucket, a file read again only when its content
//! changed, and a file still being written left for the next run.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::golden::assert_sample_outputs;
use common::{file_fixture, repo, stderr, swap, table, Tenant};

/// A tenant whose `files` source is a folder holding the sample files.
fn folder_tenant(label: &str) -> (Tenant, PathBuf) {
    let t = Tenant::new(label);
    t.seed_postgres(10);
    let drop = t.dir.path().join("drop");
    common::copy_dir(&repo().join("fixtures/sample/bucket"), &drop);
    point_files_at(&t, &drop);
    (t, drop)
}

fn point_files_at(t: &Tenant, folder: &Path) {
    t.write_manifest(|m| {
        let start = m.find("[sources.files]\n").unwrap();
        let end = start + m[start..].find("columns = ").unwrap();
        let block = format!(
            "[sources.files]\nkind = \"folder\"\npath = \"{}\"\nsettle_seconds = 0.5\n",
            folder.display()
        );
        let m = format!("{}{block}{}", &m[..start], &m[end..]);
        swap(m, "kind = \"folder\"", "kind = \"folder\"")
    });
}

#[test]
fn a_folder_source_gives_what_the_bucket_gives_and_reads_only_what_changed() {
    let (t, drop) = folder_tenant("folder");
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains(&format!(
            "fetching from source `files` (folder {})",
            drop.display()
        )),
        "{log}"
    );
    assert_sample_outputs(&t);
    assert_eq!(
        t.query("select object_key, status, rows from etl.file_ledger order by 1"),
        table(
            "providers/2026-11-27/providers.csv | loaded | 15
             providers/2026-11-28/providers.csv | loaded | 3
             providers/2026-11-28/providers.json | loaded | 3"
        )
    );

    // touched, not changed: not read again
    let day1 = drop.join("providers/2026-11-27/providers.csv");
    let text = std::fs::read(&day1).unwrap();
    std::fs::write(&day1, &text).unwrap();
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("3 objects listed: 0 new or changed read, 3 unchanged skipped, 0 rejected"),
        "{log}"
    );

    // a new file, a bad one and a partial upload's temporary file
    std::fs::write(
        drop.join("providers/2026-11-29.csv"),
        "ProviderName,ProviderID,NPI,Specialty,SiteName,SourceID,SpecSource,IDSource\n\
         Zoe Young,018,1000000012,Neuro,Metro Med,ZY018,Neurology,ZY-NPI\n",
    )
    .unwrap();
    std::fs::write(drop.join("providers/notes.pdf"), b"%PDF-1.4").unwrap();
    std::fs::write(drop.join("providers/.upload.csv.part"), b"Name\nhalf").unwrap();
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("5 objects listed: 1 new or changed read, 3 unchanged skipped, 1 rejected"),
        "{log}"
    );
    assert!(
        log.contains("providers/notes.pdf: rejected, the other files go on: unknown file type"),
        "{log}"
    );
    assert_eq!(
        t.query(
            "select provider_id, provider_name, npi from omop.provider where npi = '1000000012'"
        ),
        table("21 | Zoe Young | 1000000012")
    );

    // changed content: read again, its old rows replaced
    std::fs::write(
        drop.join("providers/2026-11-29.csv"),
        "ProviderName,ProviderID,NPI,Specialty,SiteName,SourceID,SpecSource,IDSource\n\
         Zoe Young-Park,018,1000000012,Neuro,Metro Med,ZY018,Neurology,ZY-NPI\n",
    )
    .unwrap();
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains(
            "providers/2026-11-29.csv: changed since it was read (new ETag), reading it again"
        ),
        "{log}"
    );
    assert_eq!(
        t.query("select provider_id, provider_name from omop.provider where npi = '1000000012'"),
        table("21 | Zoe Young-Park")
    );
}

/// A folder's JSON files are read beside the CSV files' scan, as a bucket's copies are:
/// each keeps its own rows and outcome, and a bad one is named by its path.
#[test]
fn a_folder_s_json_files_each_keep_their_own_rows_and_outcome() {
    let (t, drop) = folder_tenant("folder_json");
    std::fs::write(
        drop.join("providers/a.ndjson"),
        file_fixture("lines.ndjson"),
    )
    .unwrap();
    std::fs::write(
        drop.join("providers/b.json"),
        file_fixture("png_named.json"),
    )
    .unwrap();
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("5 objects listed: 4 new or changed read, 0 unchanged skipped, 1 rejected"),
        "{log}"
    );
    assert_eq!(
        t.query(
            "select object_key, status, rows from etl.file_ledger where status = 'loaded' order by 1"
        ),
        table(
            "providers/2026-11-27/providers.csv | loaded | 15
             providers/2026-11-28/providers.csv | loaded | 3
             providers/2026-11-28/providers.json | loaded | 3
             providers/a.ndjson | loaded | 2"
        )
    );
    assert_eq!(
        t.query(
            "select \"ProviderName\" from raw.files_provider where _object_key = 'providers/a.ndjson' order by _row"
        ),
        table("Nd One\nNd Two")
    );
    let error = t.query("select error from etl.file_ledger where object_key = 'providers/b.json'");
    assert!(
        error[0][0].contains(&drop.join("providers/b.json").display().to_string()),
        "{error:?}"
    );
}

#[test]
fn a_file_still_being_written_is_left_for_the_next_run() {
    let (t, drop) = folder_tenant("folder_midwrite");
    t.run_ok(&[]);
    // a large export arriving slowly: a line every 50 ms for 3 s
    let growing = drop.join("providers/2026-11-30.csv");
    let mut file = std::fs::File::create(&growing).unwrap();
    writeln!(
        file,
        "ProviderName,ProviderID,NPI,Specialty,SiteName,SourceID,SpecSource,IDSource"
    )
    .unwrap();
    let writer = std::thread::spawn(move || {
        for i in 0..60 {
            writeln!(
                file,
                "Slow Writer{i},{},,Neuro,Metro Med,SW{i:03},Neurology,SW",
                300 + i
            )
            .unwrap();
            file.flush().unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("providers/2026-11-30.csv: still being written (it changed between two looks 0.5s apart), left for the next run"),
        "{log}"
    );
    assert!(
        log.contains("3 objects listed: 0 new or changed read, 3 unchanged skipped"),
        "{log}"
    );
    assert_eq!(
        t.query(
            "select count(*) from etl.file_ledger where object_key = 'providers/2026-11-30.csv'"
        ),
        table("0")
    );
    writer.join().unwrap();
    // written in full: the next run reads it, every line
    let log = stderr(&t.run_ok(&[]));
    assert!(log.contains("providers/2026-11-30.csv: 60 rows"), "{log}");
    assert_eq!(
        t.query("select count(*) from raw.files_provider where _object_key = 'providers/2026-11-30.csv'"),
        table("60")
    );
}

#[test]
fn a_folder_that_is_not_there_fails_the_run_naming_it() {
    let (t, drop) = folder_tenant("folder_missing");
    t.run_ok(&[]);
    let moved = drop.with_extension("moved");
    std::fs::rename(&drop, &moved).unwrap();
    let out = t.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "source `files` (folder {0}): folder {0} does not exist",
            drop.display()
        )),
        "{}",
        stderr(&out)
    );
    std::fs::rename(&moved, &drop).unwrap();
    t.run_ok(&[]);
    assert_sample_outputs(&t);
}

/// A file source receiving several shapes of file: each layout with its columns and its
/// own mapping; a file takes the layout its header matches, and a file that matches none is
/// rejected by key while the others load.
#[test]
fn files_of_several_layouts_each_map_their_own_way() {
    let (t, drop) = folder_tenant("layouts");
    t.write_manifest(|m| {
        let start = m.find("[sources.files]\n").unwrap();
        let end = start + m[start..].find("columns = ").unwrap();
        let end = end + m[end..].find('\n').unwrap() + 1;
        let m = format!(
            "{}[sources.files]\nkind = \"folder\"\npath = \"{}\"\nsettle_seconds = 0.2\n{}",
            &m[..start],
            drop.display(),
            &m[end..]
        );
        let map_start = m.find("[sources.files.map.provider]").unwrap();
        let map_end = m.find("[[steps]]").unwrap();
        let layouts = "[sources.files.layouts.standard]\n\
            table = \"provider\"\n\
            columns = [\"ProviderName\", \"ProviderID\", \"NPI\", \"Specialty\", \"SiteName\", \"SourceID\", \"SpecSource\", \"IDSource\"]\n\n\
            [sources.files.layouts.standard.map.provider]\n\
            name = \"ProviderName\"\nnpi = \"NPI\"\nsource_id = \"SourceID\"\nclient_provider_id = \"ProviderID\"\n\
            specialty = \"Specialty\"\nspecialty_alt = \"SpecSource\"\nsite_name = \"SiteName\"\n\n\
            [sources.files.layouts.export]\n\
            columns = [\"Full Name\", \"NPI Number\", \"Speciality\", \"Site\", \"Staff Code\"]\n\n\
            [sources.files.layouts.export.map.provider]\n\
            name = \"Full Name\"\nnpi = \"NPI Number\"\nsource_id = \"Staff Code\"\nspecialty = \"Speciality\"\nsite_name = \"Site\"\n\n";
        format!("{}{layouts}{}", &m[..map_start], &m[map_end..])
    });
    std::fs::write(
        drop.join("providers/export-2026-11-29.csv"),
        "Full Name;NPI Number;Speciality;Site;Staff Code\nZoe Young;1000000012;Neuro;Metro Med;ZY018\n",
    )
    .unwrap();
    std::fs::write(
        drop.join("providers/unknown-shape.csv"),
        "Colour,Weight\nblue,12\n",
    )
    .unwrap();
    let log = stderr(&t.run_ok(&[]));
    assert!(
        log.contains("providers/unknown-shape.csv: rejected, the other files go on: its header matches no declared layout (found [\"Colour\", \"Weight\"]; layouts: export ["),
        "{log}"
    );
    // the sample's files took the standard layout, the export its own
    assert_eq!(
        t.query("select _object_key, count(*) from raw.files_provider group by 1 order by 1"),
        table(
            "providers/2026-11-27/providers.csv | 15
             providers/2026-11-28/providers.csv | 3
             providers/2026-11-28/providers.json | 3"
        )
    );
    assert_eq!(
        t.query("select _object_key, \"Full Name\", \"Staff Code\" from raw.files_export"),
        table("providers/export-2026-11-29.csv | Zoe Young | ZY018")
    );
    assert_eq!(
        t.query("select provider_id, provider_name, npi, care_site_id, provider_source_value, specialty_source_value from omop.provider where npi = '1000000012'"),
        table("2 | Zoe Young | 1000000012 | 3 | ZY018 | Neuro")
    );
    assert_eq!(
        t.query("select object_key, status from etl.file_ledger where object_key like '%unknown%'"),
        table("providers/unknown-shape.csv | rejected")
    );
    // every row of both layouts accounted for under the one source
    assert_eq!(
        t.query("select rows_read, loaded, merged, quarantined from etl.reconciliation where source = 'files'"),
        table("22 | 16 | 4 | 2")
    );
}

/// `etl validate` checks a layout's mapping against the newest file actually received,
/// not only against the columns the manifest declares.
#[test]
fn validate_checks_mappings_against_the_newest_file_of_each_layout() {
    let (t, drop) = folder_tenant("folder_newest");
    let m = t.manifest_arg();
    let out = t.etl(&["validate", &m]);
    assert!(out.status.success(), "{}", stderr(&out));
    // a newer export without the SiteName column the mapping reads
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        drop.join("providers/2026-11-30.csv"),
        "ProviderName,ProviderID,NPI,Specialty,SourceID,SpecSource,IDSource\n\
         Zoe Young,018,1000000012,Neuro,ZY018,Neurology,ZY-NPI\n",
    )
    .unwrap();
    let out = t.etl(&["validate", &m]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "error: `sources.files.map.provider.site_name`: the newest file of layout `provider` (providers/2026-11-30.csv) cannot give it: Referenced column \"SiteName\" not found"
        ),
        "{}",
        stderr(&out)
    );
}
