//! Run-config primitives: a settings tree that a TOML file, command-line flags and
//! `--set section.key=value` write into, and one deserialisation of it whose errors name the
//! dotted key at fault and suggest the nearest known key.
//!
//! ```
//! use dtl_core::config::{self, Table};
//!
//! #[derive(serde::Deserialize, Debug)]
//! #[serde(deny_unknown_fields)]
//! struct Train { epochs: usize }
//! #[derive(serde::Deserialize, Debug)]
//! #[serde(deny_unknown_fields)]
//! struct Run { train: Train }
//!
//! let mut tree = Table::new();
//! let (key, value) = config::parse_assignment("train.epochs=3")?;
//! config::set(&mut tree, &key, value)?;
//! let run: Run = config::from_tree(tree.clone())?;
//! assert_eq!(run.train.epochs, 3);
//!
//! config::set(&mut tree, "train.epoch", toml::Value::Integer(4))?;
//! let err = config::from_tree::<Run>(tree).unwrap_err().to_string();
//! assert!(err.contains("train.epoch") && err.contains("did you mean `epochs`"), "{err}");
//! # Ok::<(), dtl_core::Error>(())
//! ```

use serde::de::DeserializeOwned;

use crate::{Error, Result};

pub use toml::{Table, Value};

/// Splits `key=value` (the form of `--set`), the value read as a TOML value (a number, a
/// boolean, an array, an inline table, a quoted string) or else taken as a bare string.
pub fn parse_assignment(text: &str) -> Result<(String, Value)> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(Error::config(
            "--set",
            format!("`{text}` is not KEY=VALUE (for example train.epochs=20)"),
        ));
    };
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(Error::config(
            "--set",
            format!("`{key}` is not a dotted key (for example strategy.lambda)"),
        ));
    }
    Ok((key.to_string(), parse_value(value.trim())))
}

/// A value as TOML reads it, or the text itself as a string when it is not a TOML value (so
/// that `placement=box` needs no quotes).
pub fn parse_value(text: &str) -> Value {
    match toml::from_str::<Table>(&format!("v = {text}")) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| Value::String(text.into())),
        Err(_) => Value::String(text.into()),
    }
}

/// Sets the dotted `key` of `tree` to `value`, creating the tables on the way.
pub fn set(tree: &mut Table, key: &str, value: Value) -> Result<()> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts
        .pop()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Error::config(key, "an empty key"))?;
    let mut table = tree;
    let mut walked = String::new();
    for part in parts {
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(part);
        let slot = table
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        table = match slot {
            Value::Table(t) => t,
            other => {
                return Err(Error::config(
                    key,
                    format!("`{walked}` is a {}, not a table", other.type_str()),
                ))
            }
        };
    }
    table.insert(last.to_string(), value);
    Ok(())
}

/// The value at the dotted `key`, if set.
pub fn get<'a>(tree: &'a Table, key: &str) -> Option<&'a Value> {
    let mut parts = key.split('.');
    let mut value = tree.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

/// Deserialises `tree` as a `T`; an error names the dotted key at fault, and an unknown key the
/// nearest known one.
pub fn from_tree<T: DeserializeOwned>(tree: Table) -> Result<T> {
    deserialize_at("", Value::Table(tree), |d| T::deserialize(d))
}

/// The tracking deserializer [`deserialize_at`] hands to its closure.
pub type Tracked<'a> = serde_path_to_error::Deserializer<'a, 'a, Value>;

/// Deserialises `value`, which sits at the dotted `prefix` of a tree, with `f` (for types whose
/// deserialisation needs an argument, such as a strategy's settings chosen by its name); errors
/// as [`from_tree`]'s, their keys prefixed.
pub fn deserialize_at<T>(
    prefix: &str,
    value: Value,
    f: impl FnOnce(Tracked<'_>) -> std::result::Result<T, toml::de::Error>,
) -> Result<T> {
    let mut track = serde_path_to_error::Track::new();
    match f(serde_path_to_error::Deserializer::new(value, &mut track)) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = track.path().to_string();
            Err(describe(prefix, &path, e.message()))
        }
    }
}

/// The error for `message` at `path` (serde_path_to_error's, `.` for the root) under `prefix`.
fn describe(prefix: &str, path: &str, message: &str) -> Error {
    let mut key: Vec<&str> = [prefix]
        .into_iter()
        .chain(path.split('.'))
        .filter(|p| !p.is_empty() && *p != "?")
        .collect();
    if let Some(unknown) = backticked(message, "unknown field ").into_iter().next() {
        if key.last() != Some(&unknown) {
            key.push(unknown);
        }
        let known = match message.split_once("expected ") {
            Some((_, rest)) => backticked(rest, ""),
            None => Vec::new(),
        };
        let hint = match suggest(unknown, &known) {
            Some(k) => format!(", did you mean `{k}`?"),
            None => String::new(),
        };
        let list = if known.is_empty() {
            " (this section has no settings)".to_string()
        } else {
            format!(" (known: {})", known.join(", "))
        };
        return Error::config(key.join("."), format!("unknown key{hint}{list}"));
    }
    let key = if key.is_empty() {
        "config".to_string()
    } else {
        key.join(".")
    };
    Error::config(key, message.to_string())
}

/// The backticked words of `text` after `after`.
fn backticked<'a>(text: &'a str, after: &str) -> Vec<&'a str> {
    let Some(start) = text.find(after) else {
        return Vec::new();
    };
    text[start + after.len()..]
        .split('`')
        .skip(1)
        .step_by(2)
        .collect()
}

/// The known key nearest to `unknown` (at most a third of its letters edited), comparing `-`
/// and `_` as equal.
pub fn suggest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let norm = |s: &str| s.replace('_', "-").to_lowercase();
    let u = norm(unknown);
    let limit = (u.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (strsim::levenshtein(&u, &norm(k)), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Inner {
        lambda: f64,
        #[serde(default)]
        adapt_width: usize,
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        strategy: Inner,
    }

    #[test]
    fn values_parse_as_toml_or_as_bare_strings() {
        assert_eq!(parse_value("0.5"), Value::Float(0.5));
        assert_eq!(parse_value("20"), Value::Integer(20));
        assert_eq!(parse_value("true"), Value::Boolean(true));
        assert_eq!(parse_value("box"), Value::String("box".into()));
        assert_eq!(parse_value("\"1\""), Value::String("1".into()));
        assert_eq!(
            parse_value("[1, 2]"),
            Value::Array(vec![Value::Integer(1), Value::Integer(2)])
        );
        assert!(parse_assignment("lambda").is_err());
        assert!(parse_assignment("strategy..lambda=1").is_err());
    }

    #[test]
    fn set_builds_tables_and_refuses_to_descend_into_a_value() {
        let mut t = Table::new();
        set(&mut t, "strategy.lambda", Value::Float(1.0)).unwrap();
        set(&mut t, "strategy.adapt-width", Value::Integer(8)).unwrap();
        assert_eq!(get(&t, "strategy.lambda"), Some(&Value::Float(1.0)));
        let o: Outer = from_tree(t.clone()).unwrap();
        assert_eq!(
            o.strategy,
            Inner {
                lambda: 1.0,
                adapt_width: 8
            }
        );
        let err = set(&mut t, "strategy.lambda.x", Value::Integer(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`strategy.lambda` is a float"), "{err}");
    }

    #[test]
    fn errors_name_the_dotted_key_and_the_nearest_known_one() {
        let mut t = Table::new();
        set(&mut t, "strategy.lamda", Value::Float(1.0)).unwrap();
        let err = from_tree::<Outer>(t).unwrap_err().to_string();
        assert!(
            err.contains("`strategy.lamda`: unknown key, did you mean `lambda`?"),
            "{err}"
        );
        assert!(err.contains("known: lambda, adapt-width"), "{err}");

        let mut t = Table::new();
        set(&mut t, "strategy.lambda", Value::String("high".into())).unwrap();
        let err = from_tree::<Outer>(t).unwrap_err().to_string();
        assert!(
            err.contains("`strategy.lambda`") && err.contains("string"),
            "{err}"
        );

        // Far from every known key: no suggestion, the list only.
        let mut t = Table::new();
        set(&mut t, "strategy.zzzzzzzz", Value::Float(1.0)).unwrap();
        let err = from_tree::<Outer>(t).unwrap_err().to_string();
        assert!(!err.contains("did you mean") && err.contains("known:"), "{err}");
        assert_eq!(suggest("batch-size", &["batch_size", "seed"]), Some("batch_size"));
    }
}
