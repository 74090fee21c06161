//! The cleansing macros of `sql/macros/`, called as a user would in a DuckDB session. The
//! identifiers and NPIs of nearly every row skip their regex (a value without whitespace,
//! digits alone): these tests hold that shortcut to the rule it stands for.

mod common;

use common::{rows, NULL};

/// An in-memory database holding the shipped cleansing and NPI macros.
fn macros() -> duckdb::Connection {
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/macros");
    for name in ["cleansing.sql", "npi.sql"] {
        let file = dir.join(name);
        conn.execute_batch(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    conn
}

/// Values a source may send: none, null tokens in any case and padding, every whitespace
/// the cleansing knows (and a vertical tab, which it does not), digits with and without
/// separators and leading zeros, signs, non-ASCII digits.
const SENT: &[&str] = &[
    "",
    " ",
    "  ",
    "\t",
    "NULL",
    "null",
    " n/a ",
    "N/A",
    "na",
    "NONE",
    "-",
    " - ",
    "js004",
    "JS004",
    " js004",
    "js004 ",
    "JS 004",
    "JS  004",
    "JS\t004",
    "JS\n004",
    "JS\r004",
    "JS\u{c}004",
    "JS\u{a0}004",
    "JS\u{b}004",
    "\u{a0}",
    "001",
    "0012345678",
    "1234567893",
    "123-456-7893",
    "(123) 456 7893",
    "+1234567893",
    "1234567893 ",
    "１２３",
    "NPI",
    "12a3",
];

#[test]
fn identifiers_and_npis_without_whitespace_are_cleansed_as_the_full_rule_cleanses_them() {
    let conn = macros();
    let values: Vec<String> = SENT
        .iter()
        .map(|s| format!("('{}')", s.replace('\'', "''")))
        .collect();
    let sql = format!(
        "select s,
                etl_source_id(s) is not distinct from
                    upper(nullif(trim(regexp_replace(etl_null_token(s), '[\\s\\x{{00A0}}]+', ' ', 'g')), '')),
                etl_npi_digits(s) is not distinct from
                    nullif(regexp_replace(coalesce(etl_null_token(s), ''), '[^0-9]', '', 'g'), '')
         from (values {}) as sent(s)",
        values.join(", ")
    );
    for row in rows(&conn, &sql) {
        assert_eq!(row[1..], ["true", "true"], "sent {:?}", row[0]);
    }
}

#[test]
fn identifiers_and_npis_are_cleansed_to_these_values() {
    let conn = macros();
    let cases = [
        ("etl_source_id('js004')", "JS004"),
        ("etl_source_id(' js  004 ')", "JS 004"),
        ("etl_source_id('JS\t004')", "JS 004"),
        ("etl_source_id('n/a')", NULL),
        ("etl_source_id('-')", NULL),
        ("etl_source_id('\t')", NULL),
        ("etl_source_id(NULL)", NULL),
        ("etl_source_id('001')", "001"),
        ("etl_npi_digits('1234567893')", "1234567893"),
        ("etl_npi_digits('123-456-7893')", "1234567893"),
        ("etl_npi_digits('0012345678')", "0012345678"),
        ("etl_npi_digits(1234567893)", "1234567893"),
        ("etl_npi_digits('NULL')", NULL),
        ("etl_npi_digits('none')", NULL),
        ("etl_npi_digits('abc')", NULL),
        ("etl_npi_digits(NULL)", NULL),
    ];
    each_gives(&conn, &cases);
}

/// Each call of a macro gives its value.
fn each_gives(conn: &duckdb::Connection, cases: &[(impl AsRef<str>, &str)]) {
    for (call, want) in cases {
        let call = call.as_ref();
        assert_eq!(
            rows(conn, &format!("select {call}")),
            [[want.to_string()]],
            "{call}"
        );
    }
}

/// A person's name as published: leading titles (one or several, any case, with or without
/// a dot) and trailing credentials (one or a list) removed, spacing cleaned, "Last, First"
/// put in display order.
#[test]
fn names_lose_their_titles_and_credentials() {
    let cases = [
        ("Dr. John Doe", "John Doe"),
        ("Prof. Ada Lovelace", "Ada Lovelace"),
        ("prof ada lovelace", "ada lovelace"),
        ("Mrs Jane Roe", "Jane Roe"),
        ("Ms. Kim Lo", "Kim Lo"),
        ("Dr. Dr. Ann Lee", "Ann Lee"),
        ("John Doe, MD", "John Doe"),
        ("Jane Roe PhD", "Jane Roe"),
        ("Ann Lee, M.D., FACC", "Ann Lee"),
        ("Smith, John", "John Smith"),
        ("  Mary   Major  ", "Mary Major"),
    ]
    .map(|(sent, want)| (format!("etl_person_name('{sent}')"), want));
    each_gives(&macros(), &cases);
}
