//! Provider identity as a steward sees it: possible duplicates for review (never merged),
//! and the steward's decisions, kept as data, honoured by the next runs.

mod common;

use std::path::PathBuf;

use common::golden::PROVIDER_GOLDEN;
use common::{decisions, providers_csv, same_decisions, stderr, table, Tenant};

const PAIRS: &str = "select provider_a, provider_b, name_a, name_b, score, \
                     array_to_string(evidence, '; ') from staged.possible_duplicates order by all";

const HEADER: &str = "decision,provider_id,other_provider_id,npi,name,note\n";

/// Points the tenant's manifest at a decisions file holding `lines`; returns its path.
fn decide(t: &Tenant, lines: &str) -> PathBuf {
    let file = t.dir.path().join("stewards.csv");
    std::fs::write(&file, format!("{HEADER}{lines}")).unwrap();
    let path = file.display().to_string();
    t.write_manifest(|m| format!("{m}\n[identity]\ndecisions = \"{path}\"\n"));
    file
}

/// The exercise's planted pairs: "Jane S." (no NPI) beside "Jane Smith", "Johnathan Doe"
/// beside "John Doe"; listed with their evidence, and nothing merged.
#[test]
fn possible_duplicates_are_listed_with_their_evidence_and_never_merged() {
    let t = Tenant::with_sample("duplicates");
    t.run_ok(&[]);
    assert_eq!(
        t.query(PAIRS),
        table(
            " 5 | 13 | John Doe   | Johnathan Doe | 0.903 | names 0.92 alike (Jaro-Winkler); related source ids: JD001, JD003; against: different NPIs 1234567890, 3456789012
             11 | 19 | Jane Smith | Jane S.       | 0.980 | names 0.92 alike (Jaro-Winkler); initials fit; same specialty: Peds; related source ids: JS002, JS004"
        )
    );
    assert_eq!(t.published("provider"), table(PROVIDER_GOLDEN));
    // `etl inspect` has them under a short name
    let m = t.manifest_arg();
    let out = t.etl(&[
        "inspect",
        &m,
        "-c",
        "select count(*) as pairs from duplicates",
    ]);
    assert_eq!(
        common::stdout(&out),
        "  pairs\n      2\n",
        "{}",
        stderr(&out)
    );
}

/// Runs the sample with 49 more providers, each named by `name` from two letters that
/// differ between them ("ak", "al", … "gq"), and gives the possible duplicates listed.
fn pairs_with_49_more(name: &str, make: impl Fn(&str) -> String) -> Vec<Vec<String>> {
    let t = Tenant::with_sample(name);
    let rows: String = (0..49u8)
        .map(|i| {
            let letters = format!("{}{}", char::from(b'a' + i / 7), char::from(b'k' + i % 7));
            format!(
                "{},{},,Pediatrics,Metro Med,ZB{i:03},Pediatrics,ZB-ID\n",
                make(&letters),
                300 + u32::from(i)
            )
        })
        .collect();
    t.put("providers/2026-11-29/more.csv", &providers_csv(&rows));
    t.run_ok(&[]);
    t.query("select name_a, name_b from staged.possible_duplicates order by all")
}

/// A block of more than 50 providers (a common name) is not compared: 49 more "Jane S…"
/// make the block of "Jane Smith" and "Jane S." hold 51, and that pair is no longer listed,
/// nor any pair of the newcomers; the other planted pair still is.
#[test]
fn a_block_of_more_than_50_providers_is_not_compared() {
    assert_eq!(
        pairs_with_49_more("duplicates_large_block", |l| format!("Jane S{l}")),
        table("John Doe | Johnathan Doe")
    );
}

/// The other block, (surname, first-name initial), is held to 50 as well: 49 more "J… Doe"
/// make the block of "John Doe" and "Johnathan Doe" (who share no first name) hold 51, and
/// that pair is no longer listed; the other planted pair still is.
#[test]
fn a_surname_block_of_more_than_50_providers_is_not_compared() {
    assert_eq!(
        pairs_with_49_more("duplicates_large_surname_block", |l| format!("J{l} Doe")),
        table("Jane Smith | Jane S.")
    );
}

/// A new provider that looks like a known one is compared with it in an incremental run,
/// and the pairs equal those of a full recompute.
#[test]
fn an_incremental_run_finds_the_pairs_a_full_recompute_finds() {
    let t = Tenant::with_sample("duplicates_incremental");
    t.run_ok(&[]);
    t.put(
        "providers/2026-11-29/more.csv",
        &providers_csv(
            "Sarah Wilsen,031,1720000031,Dermatology,Metro Med,SW031,Dermatology,SW-NPI\n\
          Kevin Garcia,010,,Cardiology,City Hospital,KG099,Cardiology,KG-NPI\n",
        ),
    );
    t.run_ok(&[]);
    let incremental = t.query(PAIRS);
    assert_eq!(
        incremental
            .iter()
            .map(|r| format!("{} / {}", r[2], r[3]))
            .collect::<Vec<_>>(),
        [
            "Kevin Garcia / Kevin Garcia",
            "John Doe / Johnathan Doe",
            "Jane Smith / Jane S.",
            "Sarah Wilsen / Sarah Wilson",
        ]
    );
    let before = decisions(&t);
    t.run_ok(&["--full-refresh"]);
    assert_eq!(t.query(PAIRS), incremental);
    same_decisions(
        &before,
        &decisions(&t),
        "incremental against full recompute",
    );
}

/// A steward merges "Jane S." (19) into "Jane Smith" (11): the next run publishes one
/// provider under the lower id, the other id is never given again, and ids hold over three
/// runs; the decision is audited in the lake.
#[test]
fn a_steward_merge_is_honoured_with_ids_stable_across_three_runs() {
    let t = Tenant::with_sample("merge");
    t.run_ok(&[]);
    let ids = |t: &Tenant| {
        t.query("select provider_id, provider_name from omop.provider order by provider_id")
    };
    let first = ids(&t);
    assert!(first.contains(&vec!["19".to_string(), "Jane S.".to_string()]));

    decide(
        &t,
        "merge,19,11,,,Jane S. is Jane Smith (the clinic confirmed)\n",
    );
    t.run_ok(&[]);
    let second = ids(&t);
    // one provider less, every other id as it was, Jane Smith's record under 11
    let expected: Vec<Vec<String>> = first.iter().filter(|r| r[0] != "19").cloned().collect();
    assert_eq!(second, expected);
    let merged = "select name_sent, source_id from staged.provider_rows \
                  where cluster_key = 'steward:11' order by all";
    assert_eq!(
        t.query(merged),
        table("Jane S. | JS004\nJane Smith | JS002\nJane Smith | JS002\nJane Smith | JS002")
    );
    assert_eq!(
        t.query(
            "select count(*) from staged.possible_duplicates where 19 in (provider_a, provider_b)"
        ),
        table("0")
    );
    assert_eq!(
        t.query(
            "select line, decision, provider_id, other_provider_id, note, withdrawn_run_id is null \
             from etl.steward_decisions"
        ),
        table("2 | merge | 19 | 11 | Jane S. is Jane Smith (the clinic confirmed) | true")
    );

    // a third run with a new provider: it takes a new id, never 19
    t.put(
        "providers/2026-11-29/new.csv",
        &providers_csv("Zed Newman,040,1720000040,Neuro,Metro Med,ZN040,Neurology,ZN-NPI\n"),
    );
    t.run_ok(&[]);
    let third = ids(&t);
    let mut expected = second.clone();
    expected.push(vec!["21".to_string(), "Zed Newman".to_string()]);
    assert_eq!(third, expected);
    // a new row of Jane S.'s source id goes to the merged provider too
    t.put(
        "providers/2026-11-30/jane.csv",
        &providers_csv("Jane S.,004,,Peds,Suburban Health,JS004,Pediatrics,JS-NPI-SHORT\n"),
    );
    t.run_ok(&[]);
    assert_eq!(ids(&t), expected);
    assert_eq!(
        t.query(merged),
        table("Jane S. | JS004\nJane S. | JS004\nJane Smith | JS002\nJane Smith | JS002\nJane Smith | JS002")
    );

    // withdrawn: Jane S. is a provider of her own again, under her old id
    decide(&t, "");
    t.run_ok(&[]);
    assert!(ids(&t).contains(&vec!["19".to_string(), "Jane S.".to_string()]));
    assert_eq!(
        t.query("select withdrawn_run_id is not null from etl.steward_decisions"),
        table("true")
    );
}

/// Names that are not alike letter by letter but whose initials fit ("A. Montgomery" and
/// "Alexandra Montgomery": 0.76 by Jaro-Winkler) are scored as at least 0.9 alike.
#[test]
fn names_whose_initials_fit_are_listed_though_not_alike_letter_by_letter() {
    let t = Tenant::with_sample("initials");
    t.put(
        "providers/2026-11-29/montgomery.csv",
        &providers_csv(
            "A. Montgomery,081,,Neuro,Metro Med,AM081,Neurology,AM-NPI\n\
             Alexandra Montgomery,082,1000000103,Neuro,Metro Med,XM082,Neurology,XM-NPI\n",
        ),
    );
    t.run_ok(&[]);
    assert_eq!(
        t.query(
            "select least(name_a, name_b), greatest(name_a, name_b), score, \
                    evidence[1], evidence[2], evidence[3] \
             from staged.possible_duplicates where 'A. Montgomery' in (name_a, name_b)"
        ),
        table(
            "A. Montgomery | Alexandra Montgomery | 0.960 | names 0.76 alike (Jaro-Winkler) | initials fit | same specialty: Neuro"
        )
    );
}

/// Two NPIs a steward merged into one provider: the valid one is published before one that
/// fails its check digit, though the failing one is newer.
#[test]
fn a_merged_provider_publishes_its_valid_npi_before_a_newer_one_failing_its_check() {
    let t = Tenant::with_sample("valid_npi");
    t.pg_providers(
        "(941, 'Vera Quinn', '1777777776', null, 'VQ941', null, '2026-11-01 10:00:00+00'),
         (942, 'Vera Quinn', '1777777775', null, 'VQ942', null, '2026-11-02 10:00:00+00')",
    );
    t.run_ok(&[]);
    let id = |npi: &str| {
        t.query(&format!(
            "select provider_id from omop.provider where npi = '{npi}'"
        ))[0][0]
            .clone()
    };
    let (valid, failing) = (id("1777777776"), id("1777777775"));
    decide(
        &t,
        &format!("merge,{failing},{valid},,,one person sent with two NPIs\n"),
    );
    t.run_ok(&[]);
    // (one provider, under the lower of the two ids, as a merge keeps)
    let kept = [&valid, &failing]
        .into_iter()
        .min_by_key(|id| id.parse::<i64>().unwrap())
        .unwrap();
    assert_eq!(
        t.query("select provider_id, npi from omop.provider where provider_name = 'Vera Quinn'"),
        table(&format!("{kept} | 1777777776"))
    );
}

/// keep_apart takes a pair off the review list; npi_belongs_to says whose record an NPI
/// shared by two people publishes.
#[test]
fn keep_apart_and_npi_belongs_to_are_honoured() {
    let t = Tenant::with_sample("apart");
    t.put(
        "providers/2026-11-29/wu.csv",
        &providers_csv("Al Wu,555,1934567896,Neuro,Metro Med,AW555,Neurology,AW-NPI\n"),
    );
    t.run_ok(&[]);
    let row = "select provider_id, provider_name, provider_source_value from omop.provider \
               where npi = '1934567896'";
    assert_eq!(t.query(row), table("10 | Al Wu | AW555"));

    decide(
        &t,
        "keep_apart,13,5,,,two people: John Doe and his son\n\
         npi_belongs_to,,,1934567896,\"SMITHEE, ALAN\",NPPES lists him\n",
    );
    t.run_ok(&[]);
    assert_eq!(
        t.query("select name_a, name_b from staged.possible_duplicates"),
        table("Jane Smith | Jane S.")
    );
    assert_eq!(t.query(row), table("10 | Alan Smithee | AS107"));
    assert_eq!(
        t.query(
            "select source, detail like '%Alan Smithee was published, every field from one row (pg provider row %: the steward decision on line 3)' \
             from staged.dq_flags where flag = 'name_conflict' order by source"
        ),
        table("files | true\npg | true")
    );
}

/// A decision the lake cannot honour stops the run before it starts, naming file and line.
#[test]
fn a_decision_naming_an_unknown_provider_stops_the_run_before_it_starts() {
    let t = Tenant::with_sample("unknown_provider");
    t.run_ok(&[]);
    let runs = t.query("select count(*) from etl.runs");
    let file = decide(&t, "keep_apart,5,13,,,\nmerge,11,999,,,typo\n");
    let out = t.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}:3: provider 999, which tenant `{}` does not know",
            file.display(),
            t.tenant()
        )) && err.contains("the run did not start"),
        "{err}"
    );
    assert_eq!(t.query("select count(*) from etl.runs"), runs);

    decide(&t, "npi_belongs_to,,,1111111111,Nobody Known,\n");
    let err = stderr(&t.run(&[]));
    assert!(err.contains(":2: NPI 1111111111, which tenant"), "{err}");

    decide(&t, "merge,11,,,,\n");
    let err = stderr(&t.run(&[]));
    assert!(
        err.contains(
            ":2: `other_provider_id` must be a provider id (a positive whole number), not \"\""
        ),
        "{err}"
    );
    assert_eq!(t.query("select count(*) from etl.runs"), runs);
    // `etl validate --offline` reads the file too
    let m = t.manifest_arg();
    let out = t.etl(&["validate", "--offline", &m]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(":2: `other_provider_id` must be a provider id"));
}
