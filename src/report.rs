//! `etl report`: one self-contained HTML page per run, for a steward or a client's data
//! manager who would rather open a page than write SQL. Written after every run beside its
//! summary (`<lake>/runs/<run id>.html`), and on demand by `etl report MANIFEST`.
//!
//! The page reads the lake's own tables (etl.runs, etl.reconciliation, staged.quarantine,
//! staged.dq_flags, etl.schema_drift, staged.possible_duplicates): the same figures the
//! summary, the metrics and `etl inspect` show, never computed a second way. It needs
//! nothing at view time: styles, the chart (SVG) and a small script are inline.
//!
//! It holds source values (unmapped values, provider names): like everything under the
//! lake it is owner-only; a failed run's error is shown without the input it may quote.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::engine::{literal, Engine};
use crate::manifest::Manifest;

/// How many runs the reconciliation chart and the drift table go back.
const RECENT_RUNS: usize = 30;

/// The most rows a table of the page shows (the rest are counted).
const MAX_ROWS: usize = 500;

/// Writes the page of `run_id` to `<lake>/runs/<run id>.html` (or `output`).
pub fn write(
    engine: &Engine,
    manifest: &Manifest,
    run_id: &str,
    output: Option<&Path>,
) -> Result<PathBuf> {
    let html = render(engine, manifest, run_id)?;
    let file = match output {
        Some(file) => file.to_path_buf(),
        None => manifest
            .lake_dir
            .join("runs")
            .join(format!("{run_id}.html")),
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&file, html).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(file)
}

/// `etl report MANIFEST [--run RUN] [--output FILE]`: the lake opened read-only; the last
/// run unless one is named.
pub fn command(manifest: &Manifest, run: Option<&str>, output: Option<&Path>) -> Result<PathBuf> {
    let engine = crate::inspect::open(manifest)?;
    let run_id = match run {
        Some(run) => run.to_string(),
        None => engine
            .query_strings("select max(run_id) from etl.runs")?
            .first()
            .and_then(|r| r[0].clone())
            .with_context(|| format!("tenant `{}` has no run yet", manifest.tenant))?,
    };
    if engine.query_i64(&format!(
        "select count(*) from etl.runs where run_id = {}",
        literal(&run_id)
    ))? == 0
    {
        bail!("tenant `{}` has no run {run_id}", manifest.tenant);
    }
    write(&engine, manifest, &run_id, output)
}

/// Text made safe for HTML.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn cell(value: &Option<String>) -> String {
    value
        .as_deref()
        .map_or("<span class=null>∅</span>".to_string(), esc)
}

fn exists(engine: &Engine, schema: &str, table: &str) -> Result<bool> {
    Ok(engine.query_i64(&format!(
        "select count(*) from duckdb_tables() where schema_name = {} and table_name = {}",
        literal(schema),
        literal(table)
    ))? > 0)
}

/// A table of the rows of `sql`, its columns headed by `headers`; `numeric` columns right
/// aligned. `empty` when there is no row.
fn table(
    engine: &Engine,
    id: &str,
    sql: &str,
    headers: &[&str],
    numeric: &[usize],
    empty: &str,
) -> Result<String> {
    // the first rows only, so a page stays small whatever the lake holds
    let mut rows = engine.query_strings(&format!("{sql} limit {}", MAX_ROWS + 1))?;
    if rows.is_empty() {
        return Ok(format!("<p class=empty id={id}>{}</p>", esc(empty)));
    }
    let more = if rows.len() > MAX_ROWS {
        rows.truncate(MAX_ROWS);
        let total = engine.query_i64(&format!("select count(*) from ({sql})"))?;
        format!(
            "<p class=more id={id}-more>The first {MAX_ROWS} of {total} rows; `etl inspect` \
             has them all.</p>"
        )
    } else {
        String::new()
    };
    // numbers are right-aligned, in the header as in the cells
    let class = |i: usize| {
        if numeric.contains(&i) {
            " class=num"
        } else {
            ""
        }
    };
    let mut html = format!("<table id={id} class=sortable><thead><tr>");
    for (i, h) in headers.iter().enumerate() {
        let _ = write!(html, "<th{}>{}</th>", class(i), esc(h));
    }
    html.push_str("</tr></thead><tbody>");
    for row in &rows {
        html.push_str("<tr>");
        for (i, value) in row.iter().enumerate() {
            let _ = write!(html, "<td{}>{}</td>", class(i), cell(value));
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
    html.push_str(&more);
    Ok(html)
}

/// The reconciliation of the recent runs as stacked bars (loaded, merged, quarantined),
/// one per run, each as tall as the rows it read.
fn chart(engine: &Engine, run_id: &str) -> Result<String> {
    let rows = engine.query_strings(&format!(
        "select run_id, sum(rows_read), sum(loaded), sum(merged), sum(quarantined)
         from etl.reconciliation
         where run_id in (select run_id from etl.reconciliation where run_id <= {run}
                          group by run_id order by run_id desc limit {RECENT_RUNS})
         group by run_id order by run_id",
        run = literal(run_id)
    ))?;
    if rows.is_empty() {
        return Ok("<p class=empty>No run has reconciled rows yet.</p>".to_string());
    }
    let n = |v: &Option<String>| {
        v.as_deref()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let max = rows.iter().map(|r| n(&r[1])).fold(1.0_f64, f64::max);
    let (width, height, bar) = (760.0, 180.0, 760.0 / rows.len().max(8) as f64);
    let mut svg = format!(
        "<svg id=reconciliation-chart role=img viewBox=\"0 0 {width} {}\" width=\"100%\" \
         aria-label=\"rows read, loaded, merged and quarantined in the last {} runs\">",
        height + 20.0,
        rows.len()
    );
    for (i, r) in rows.iter().enumerate() {
        let x = i as f64 * bar + 2.0;
        let mut y = height;
        let run = r[0].clone().unwrap_or_default();
        for (value, class) in [
            (n(&r[2]), "loaded"),
            (n(&r[3]), "merged"),
            (n(&r[4]), "quarantined"),
        ] {
            let h = value / max * (height - 10.0);
            y -= h;
            let _ = write!(
                svg,
                "<rect class={class} x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\">\
                 <title>{} {class}: {value}</title></rect>",
                (bar - 4.0).max(1.0),
                esc(&run)
            );
        }
        if run == run_id {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" class=label>this run</text>",
                x,
                height + 14.0
            );
        }
    }
    svg.push_str("</svg>");
    svg.push_str(
        "<p class=legend><span class=\"key loaded\"></span>loaded <span class=\"key merged\"></span>merged \
         <span class=\"key quarantined\"></span>quarantined (rows read = the three together)</p>",
    );
    Ok(svg)
}

/// The page of one run.
pub fn render(engine: &Engine, manifest: &Manifest, run_id: &str) -> Result<String> {
    let run = literal(run_id);
    let head = engine.query_strings(&format!(
        "select status, strftime(started_at, '%Y-%m-%d %H:%M:%S %Z'),
                strftime(finished_at, '%Y-%m-%d %H:%M:%S %Z'),
                round(epoch(finished_at) - epoch(started_at), 2)::varchar,
                coalesce(etl_version, ''), coalesce(error, '')
         from etl.runs where run_id = {run}"
    ))?;
    let Some(head) = head.first() else {
        bail!("tenant `{}` has no run {run_id}", manifest.tenant);
    };
    let get = |i: usize| head[i].clone().unwrap_or_default();
    let status = get(0);
    let mut body = String::new();
    let _ = write!(
        body,
        "<header><h1>{tenant}: run {run_id}</h1>\
         <p><span id=status class=\"status {status}\">{status}</span> \
         started {started}, finished {finished} ({seconds} s), etl {version}</p>",
        tenant = esc(&manifest.tenant),
        run_id = esc(run_id),
        status = esc(&status),
        started = esc(&get(1)),
        finished = esc(&get(2)),
        seconds = esc(&get(3)),
        version = esc(&get(4)),
    );
    if status == "failed" {
        let _ = write!(
            body,
            "<p class=error id=error>{}</p><p>Nothing was published by this run: the figures \
             below are the lake as the last good run left it.</p>",
            esc(&crate::run::summary_without_input(&get(5)))
        );
    }
    body.push_str("</header>");

    // reconciliation
    body.push_str("<section><h2>Reconciliation</h2>");
    body.push_str(&chart(engine, run_id)?);
    body.push_str(&table(
        engine,
        "reconciliation",
        &format!(
            "select entity, source, rows_read, loaded, merged, quarantined
             from etl.reconciliation where run_id = {run} order by entity, source"
        ),
        &crate::cli::RECONCILIATION_HEADERS,
        &[2, 3, 4, 5],
        "This run reconciled nothing (it failed, or it did not transform).",
    )?);
    body.push_str("</section>");

    let staged = |table: &str| exists(engine, "staged", table);
    // quarantine
    body.push_str("<section><h2>Quarantine by rule</h2>");
    body.push_str(&if staged("quarantine")? {
        table(
            engine,
            "quarantine",
            "select rule_id, rule, count(*) from staged.quarantine group by all order by rule_id",
            &["rule", "name", "rows"],
            &[2],
            "No row is quarantined.",
        )?
    } else {
        "<p class=empty id=quarantine>No transform has run yet.</p>".to_string()
    });
    body.push_str("</section>");

    // flags and unmapped values
    body.push_str("<section><h2>Flags by kind</h2>");
    let has_flags = staged("dq_flags")?;
    body.push_str(&if has_flags {
        table(
            engine,
            "flags",
            "select entity, flag, count(*) from staged.dq_flags group by all order by entity, flag",
            &["entity", "flag", "rows"],
            &[2],
            "No row is flagged.",
        )?
    } else {
        "<p class=empty id=flags>No transform has run yet.</p>".to_string()
    });
    body.push_str(
        "</section><section><h2>Unmapped source values</h2>\
         <p>Values no vocabulary line maps (concept 0): add a line to the vocabulary named.</p>",
    );
    if has_flags {
        body.push_str(&table(
            engine,
            "unmapped",
            "select case flag when 'specialty_unmapped' then 'vocab/specialty.csv'
                              else 'vocab/place_of_service.csv' end,
                    value, count(*)
             from staged.dq_flags
             where flag in ('specialty_unmapped', 'place_of_service_unmapped')
             group by all order by 3 desc, 1, 2",
            &["vocabulary", "value as sent", "rows"],
            &[2],
            "Every source value maps to a concept.",
        )?);
    }
    body.push_str("</section>");

    // drift
    body.push_str(&format!(
        "<section><h2>Schema drift</h2><p>Columns missing from or added to the files of the last {RECENT_RUNS} runs.</p>"
    ));
    body.push_str(&table(
        engine,
        "drift",
        &format!(
            "select run_id, source, object_key, kind, column_name from etl.schema_drift
             where run_id in (select run_id from etl.runs where run_id <= {run}
                              order by run_id desc limit {RECENT_RUNS})
             order by run_id desc, source, object_key, kind, column_name"
        ),
        &["run", "source", "file", "kind", "column"],
        &[],
        "No drift: every file had the columns expected.",
    )?);
    body.push_str("</section>");

    // possible duplicates
    body.push_str(
        "<section><h2>Possible duplicates</h2><p>Providers that share no identifier but are \
         probably one person. Nothing is merged: a steward decides, in the tenant's decisions \
         file (<code>merge,&lt;id&gt;,&lt;id&gt;,,,why</code> or \
         <code>keep_apart,&lt;id&gt;,&lt;id&gt;,,,why</code>).</p>",
    );
    body.push_str(&if staged("possible_duplicates")? {
        table(
            engine,
            "duplicates",
            "select provider_a, name_a, provider_b, name_b, score,
                    array_to_string(evidence, '; ')
             from staged.possible_duplicates order by score desc, provider_a, provider_b",
            &["id", "name", "id", "name", "score", "evidence"],
            &[0, 2, 4],
            "No possible duplicate.",
        )?
    } else {
        "<p class=empty id=duplicates>No transform has run yet.</p>".to_string()
    });
    body.push_str("</section>");

    Ok(format!(
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <title>{tenant}: run {run_id}</title><style>{STYLE}</style></head>\
         <body>{body}<footer>Written by etl {version} from the lake {lake}.</footer>\
         <script>{SCRIPT}</script></body></html>\n",
        tenant = esc(&manifest.tenant),
        run_id = esc(run_id),
        version = env!("CARGO_PKG_VERSION"),
        lake = esc(&manifest.database_path().display().to_string()),
    ))
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em;color:#1d232a}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #d5dbe1}
table{border-collapse:collapse;width:100%}th,td{padding:.3em .6em;border-bottom:1px solid #e6eaee;text-align:left;vertical-align:top}
th{cursor:pointer;background:#f4f6f8}.num{text-align:right;font-variant-numeric:tabular-nums}
.status{padding:.1em .5em;border-radius:.3em;color:#fff}.succeeded{background:#2f7d32}.failed{background:#b3261e}.running{background:#8a6d00}
.error{background:#fdecea;padding:.6em;white-space:pre-wrap}.empty{color:#5c6670}.null{color:#9aa3ab}
rect.loaded,.key.loaded{fill:#2f7d32;background:#2f7d32}rect.merged,.key.merged{fill:#1f6fb2;background:#1f6fb2}
rect.quarantined,.key.quarantined{fill:#b3261e;background:#b3261e}.key{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 1em}
.label{font-size:10px;fill:#5c6670}footer{margin-top:3em;color:#5c6670;font-size:.85em}
";

/// Sorts a table by the column whose header is clicked; marks the page ready.
const SCRIPT: &str = "
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var numeric = th.classList.contains('num');
      var down = th.dataset.sorted !== 'asc';
      rows.sort(function (a, b) {
        var x = a.cells[column].textContent, y = b.cells[column].textContent;
        var order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
        return down ? order : -order;
      });
      th.dataset.sorted = down ? 'asc' : 'desc';
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
document.body.dataset.ready = 'yes';
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_table_shows_its_first_rows_and_counts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::engine::test_lake(dir.path());
        let html = table(
            &engine,
            "t",
            "select i, 'v<' || i from range(600) as t(i) order by i",
            &["i", "value"],
            &[0],
            "none",
        )
        .unwrap();
        // the header row and 500 rows, values escaped, the rest counted
        assert_eq!(html.matches("<tr>").count(), 501);
        assert!(html.contains("<td>v&lt;499</td>") && !html.contains("v&lt;500"));
        assert!(html.contains("The first 500 of 600 rows"), "{html}");
        let html = table(
            &engine,
            "t",
            "select 1 where false",
            &["x"],
            &[],
            "nothing <here>",
        )
        .unwrap();
        assert_eq!(html, "<p class=empty id=t>nothing &lt;here&gt;</p>");
    }
}
