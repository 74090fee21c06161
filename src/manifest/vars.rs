//! `${VAR}` and `${VAR:-default}` in manifest strings, resolved from the environment.
//! Connection details and secrets live in the environment, never in the manifest.

/// Why a string could not be resolved.
#[derive(Debug, PartialEq, Eq)]
pub enum VarError {
    /// `${NAME}` with NAME unset and no default.
    Unset(String),
    /// `${` without its `}`, or an empty or invalid name.
    Syntax(String),
}

/// Replaces every `${NAME}` / `${NAME:-default}` in `input` using `lookup`.
/// `$$` stands for a literal `$`.
pub fn interpolate(
    input: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, VarError> {
    resolve(input, &lookup)
}

fn resolve(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, VarError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(body_start) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        // the `}` that closes this reference: a default may hold references of its own
        let mut depth = 0;
        let mut end = None;
        let bytes = body_start.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            match b {
                b'{' if i > 0 && bytes[i - 1] == b'$' => depth += 1,
                b'}' if depth == 0 => {
                    end = Some(i);
                    break;
                }
                b'}' => depth -= 1,
                _ => {}
            }
        }
        let Some(end) = end else {
            return Err(VarError::Syntax(format!(
                "`${{` without a closing `}}` in {input:?}"
            )));
        };
        let body = &body_start[..end];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(VarError::Syntax(format!(
                "`${{{body}}}` is not a variable reference: expected `${{NAME}}` or `${{NAME:-default}}`"
            )));
        }
        match (lookup(name), default) {
            (Some(value), _) if !(value.is_empty() && default.is_some()) => out.push_str(&value),
            // a default is resolved in turn: `${ACME_PG_PORT:-${ETL_PG_PORT:-54329}}`
            (_, Some(default)) => out.push_str(&resolve(default, lookup)?),
            (_, None) => return Err(VarError::Unset(name.to_string())),
        }
        rest = &body_start[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.internal".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn resolves_set_variables_and_defaults() {
        assert_eq!(interpolate("${HOST}", env).unwrap(), "db.internal");
        assert_eq!(interpolate("${PORT:-5432}", env).unwrap(), "5432");
        assert_eq!(
            interpolate("${HOST:-x}:${PORT:-1}", env).unwrap(),
            "db.internal:1"
        );
        assert_eq!(interpolate("${EMPTY:-fallback}", env).unwrap(), "fallback");
        // a default may name another variable, with a default of its own
        assert_eq!(
            interpolate("${PORT:-${HOST:-x}}", env).unwrap(),
            "db.internal"
        );
        assert_eq!(
            interpolate("${PORT:-${NOPE:-54329}}/db", env).unwrap(),
            "54329/db"
        );
        assert_eq!(
            interpolate("${PORT:-${NOPE}}", env),
            Err(VarError::Unset("NOPE".into()))
        );
        assert_eq!(
            interpolate("plain $5 and $$HOME", env).unwrap(),
            "plain $5 and $HOME"
        );
    }

    #[test]
    fn names_the_unset_variable() {
        assert_eq!(
            interpolate("${PASSWORD}", env),
            Err(VarError::Unset("PASSWORD".into()))
        );
    }

    #[test]
    fn rejects_malformed_references() {
        assert!(matches!(
            interpolate("${HOST", env),
            Err(VarError::Syntax(_))
        ));
        assert!(matches!(interpolate("${}", env), Err(VarError::Syntax(_))));
        assert!(matches!(
            interpolate("${A-B}", env),
            Err(VarError::Syntax(_))
        ));
    }
}
