//! A config file that does not parse, said with its file, line, column and key.
//!
//! `toml` gives a message and the byte span it is about; this module turns the span into a
//! line and a column, finds the key the span belongs to (by walking the file's spanned tree,
//! so dotted keys and inline tables are named right), and rewords serde's messages for
//! people: `unknown key `lisen` in [sip]; known keys: listen`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// Where and why a config file is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileError {
    /// The config file.
    file: PathBuf,
    /// 1-based line and column of the problem, when known.
    position: Option<(usize, usize)>,
    /// What is wrong and what to write instead.
    message: String,
}

impl FileError {
    /// The error `error` met while reading `text`, the contents of `file`.
    pub(crate) fn new(file: &Path, text: &str, error: &toml::de::Error) -> FileError {
        let span = error.span();
        let position = span.as_ref().map(|span| line_and_column(text, span.start));
        let path = span
            .and_then(|span| key_path(text, &span))
            .unwrap_or_default();
        FileError {
            file: file.to_path_buf(),
            position,
            message: reword(error.message(), &path),
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, " line {line}, column {column}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for FileError {}

/// serde's and toml's message, for the key at `path` (empty when unknown).
fn reword(message: &str, path: &[String]) -> String {
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let Some((key, table)) = path.split_last() else {
        return format!("{message}; fix the TOML syntax there");
    };
    let place = if table.is_empty() {
        "at the top level".to_owned()
    } else {
        format!("in [{}]", table.join("."))
    };
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let known: Vec<&str> = rest.split('`').skip(3).step_by(2).collect();
        let known = if known.is_empty() {
            "there are none".to_owned()
        } else {
            known.join(", ")
        };
        return format!("unknown key `{key}` {place}; known keys: {known}");
    }
    let problem = match message.strip_prefix("invalid type: ") {
        Some(rest) => match rest.split_once(", expected ") {
            Some((found, expected)) => format!("write {expected}, not {found}"),
            None => message.clone(),
        },
        None => message.clone(),
    };
    format!("bad value for `{key}` {place}: {problem}")
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The keys leading to the innermost key or value whose span holds `span.start`, e.g.
/// `["overlay", "listen"]`; array items are named by their array's key.
fn key_path(text: &str, span: &Range<usize>) -> Option<Vec<String>> {
    let table = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    find_in_table(table.get_ref(), span.start, &mut path).then_some(path)
}

fn find_in_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table.iter() {
        path.push(key.get_ref().to_string());
        if find_in_value(value.get_ref(), offset, path)
            || key.span().contains(&offset)
            || value.span().contains(&offset)
        {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value(value: &DeValue<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    match value {
        DeValue::Table(table) => find_in_table(table, offset, path),
        DeValue::Array(items) => items.iter().any(|item| {
            find_in_value(item.get_ref(), offset, path) || item.span().contains(&offset)
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_count_from_one() {
        let text = "a = 1\n[sip]\nlisen = 2\n";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 12), (3, 1));
        assert_eq!(line_and_column(text, 20), (3, 9));
    }

    #[test]
    fn unknown_keys_list_the_known_ones() {
        let path = ["sip".to_owned(), "lisen".to_owned()];
        assert_eq!(
            reword("unknown field `lisen`, expected `listen`", &path),
            "unknown key `lisen` in [sip]; known keys: listen"
        );
        assert_eq!(
            reword(
                "unknown field `x`, expected one of `name`, `listen`, `mdns`",
                &["overlay".to_owned(), "x".to_owned()]
            ),
            "unknown key `x` in [overlay]; known keys: name, listen, mdns"
        );
    }
}
