//! Files in an S3 bucket (MinIO, AWS S3, SeaweedFS: one endpoint setting apart): the
//! bucket as a [`Store`]. Objects are listed with their ETag and copied to local files for
//! DuckDB to read; an object that could not be copied is read through DuckDB's httpfs, with
//! a secret scoped to the bucket. What is done with them is `files`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use s3::creds::Credentials;
use s3::{Bucket, Region};

use crate::engine::{literal, Engine};
use crate::manifest::{S3Source, UrlStyle};
use crate::sources::files::{FileSettings, ObjectInfo, Probe, Store};

/// The bucket of a source.
pub struct S3Store<'a> {
    pub s3: &'a S3Source,
}

impl S3Store<'_> {
    /// What the bucket's files become.
    pub fn settings(s3: &S3Source) -> FileSettings {
        FileSettings {
            layouts: s3.layouts.clone(),
            on_bad_file: s3.on_bad_file,
            encoding: s3.encoding.clone(),
        }
    }
}

impl Store for S3Store<'_> {
    fn endpoint(&self) -> String {
        endpoint(self.s3)
    }

    fn location(&self) -> String {
        format!("s3://{}/{}", self.s3.bucket, self.s3.prefix)
    }

    fn connect(&self, _engine: &Engine, _name: &str) -> Result<()> {
        Ok(())
    }

    fn open_in(&self, engine: &Engine, name: &str) -> Result<()> {
        create_secret(engine, name, self.s3)
    }

    fn list(&self) -> Result<Vec<ObjectInfo>> {
        list(self.s3)
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.s3.bucket)
    }

    fn probe(&self, object: &ObjectInfo) -> Probe {
        probe(self.s3, object)
    }

    fn head(&self, object: &ObjectInfo, bytes: u64) -> Result<Vec<u8>> {
        let response = bucket(self.s3)?
            .get_object_range(&object.key, 0, Some(bytes.max(1) - 1))
            .map_err(|e| classify(&e))?;
        Ok(response.bytes().to_vec())
    }

    fn download(&self, object: &ObjectInfo, to: &Path) -> Result<bool> {
        let mut file = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(to).with_context(|| format!("cannot create {}", to.display()))?,
        );
        bucket(self.s3)?
            .get_object_to_writer(&object.key, &mut file)
            .map_err(|e| classify(&e))?;
        file.flush()
            .with_context(|| format!("cannot write {}", to.display()))?;
        Ok(true)
    }
}

fn endpoint(s3: &S3Source) -> String {
    format!("s3 {}, bucket {}", url(s3), s3.bucket)
}

fn url(s3: &S3Source) -> String {
    let scheme = if s3.use_ssl { "https" } else { "http" };
    if s3.endpoint.contains("://") {
        s3.endpoint.clone()
    } else {
        format!("{scheme}://{}", s3.endpoint)
    }
}

/// A client for the bucket, with a bounded request time.
pub fn bucket(s3: &S3Source) -> Result<Box<Bucket>> {
    let credentials = Credentials::new(
        Some(s3.access_key_id.expose()),
        Some(s3.secret_access_key.expose()),
        None,
        None,
        None,
    )
    .map_err(|e| anyhow!("invalid credentials: {e}"))?;
    let region = Region::Custom {
        region: s3.region.clone(),
        endpoint: url(s3),
    };
    let bucket = Bucket::new(&s3.bucket, region, credentials)?
        .with_request_timeout(Duration::from_secs(60))?;
    Ok(match s3.url_style {
        UrlStyle::Path => bucket.with_path_style(),
        UrlStyle::Vhost => bucket,
    })
}

/// Every object under the source's prefix, sorted by key.
pub fn list(s3: &S3Source) -> Result<Vec<ObjectInfo>> {
    let bucket = bucket(s3)?;
    let pages = bucket.list(s3.prefix.clone(), None).map_err(|e| {
        classify(&e).context(format!("listing s3://{}/{} failed", s3.bucket, s3.prefix))
    })?;
    let mut out: Vec<ObjectInfo> = pages
        .into_iter()
        .flat_map(|page| page.contents)
        .filter(|o| !o.key.ends_with('/'))
        .map(|o| ObjectInfo {
            etag: o.e_tag.unwrap_or_default().trim_matches('"').to_string(),
            url: format!("s3://{}/{}", s3.bucket, o.key),
            key: o.key,
            size: o.size,
            last_modified: o.last_modified,
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

fn s3_error(e: &s3::error::S3Error) -> String {
    match e {
        s3::error::S3Error::HttpFailWithBody(status, body) => {
            let code = between(body, "<Code>", "</Code>").unwrap_or("");
            let message = between(body, "<Message>", "</Message>").unwrap_or(body.as_str());
            format!("HTTP {status} {code}: {message}")
        }
        other => other.to_string(),
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(&text[from..to])
}

/// Lets DuckDB read the bucket: a secret scoped to it.
fn create_secret(engine: &Engine, name: &str, s3: &S3Source) -> Result<()> {
    engine.load_extension("httpfs")?;
    let endpoint = s3
        .endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    engine.execute(&format!(
        "create or replace temporary secret etl_s3_{name} (type s3, key_id {}, secret {}, endpoint {}, \
         region {}, url_style {}, use_ssl {}, scope {})",
        literal(s3.access_key_id.expose()),
        literal(s3.secret_access_key.expose()),
        literal(endpoint),
        literal(&s3.region),
        literal(match s3.url_style {
            UrlStyle::Path => "path",
            UrlStyle::Vhost => "vhost",
        }),
        s3.use_ssl,
        literal(&format!("s3://{}", s3.bucket)),
    ))
}

fn probe(s3: &S3Source, object: &ObjectInfo) -> Probe {
    let bucket = match bucket(s3) {
        Ok(b) => b,
        Err(e) => return Probe::Failed(e),
    };
    match bucket.head_object(&object.key) {
        Ok((head, 200)) => match head.e_tag {
            Some(etag) if etag.trim_matches('"') != object.etag => Probe::Changed,
            _ => Probe::Same,
        },
        Ok((_, status)) => Probe::Failed(classify(&s3::error::S3Error::HttpFailWithBody(
            status,
            String::new(),
        ))),
        Err(e) => Probe::Failed(classify(&e)),
    }
}

/// An S3 failure as an error, marked transient when the status or transport says so:
/// 5xx, 429 (and SlowDown, a 503), refused, reset or timed-out connections.
fn classify(e: &s3::error::S3Error) -> anyhow::Error {
    use s3::error::S3Error as E;
    let transient = match e {
        E::HttpFailWithBody(status, _) => *status >= 500 || *status == 429,
        E::HttpFail => true,
        E::Io(_) => true,
        E::Atto(inner) => matches!(
            inner.kind(),
            attohttpc::ErrorKind::Io(_)
                | attohttpc::ErrorKind::ConnectError { .. }
                | attohttpc::ErrorKind::InvalidResponse(_)
        ),
        _ => false,
    };
    let message = s3_error(e);
    if transient {
        anyhow::Error::new(crate::retry::Transient(message))
    } else {
        anyhow!(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_errors_show_code_and_message() {
        let e = s3::error::S3Error::HttpFailWithBody(
            403,
            "<Error><Code>InvalidAccessKeyId</Code><Message>The key is wrong.</Message></Error>"
                .into(),
        );
        assert_eq!(
            s3_error(&e),
            "HTTP 403 InvalidAccessKeyId: The key is wrong."
        );
    }
}
