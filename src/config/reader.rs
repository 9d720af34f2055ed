//! Reading TOML tables key by key while collecting every error with its key and line, so that one
//! run of `outpost check-config` shows them all (not just the first, as serde would).

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use toml_edit::{Item, TableLike, Value};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based; 0 when the problem has no place in the file (a missing key in an empty file).
    pub line: usize,
    /// Dotted path, e.g. `account[2].port`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: ", self.line)?;
        }
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Where errors are collected, with the source to turn byte offsets into line numbers.
pub struct Errors<'s> {
    source: &'s str,
    list: RefCell<Vec<ConfigError>>,
}

impl<'s> Errors<'s> {
    pub fn new(source: &'s str) -> Self {
        Errors {
            source,
            list: RefCell::new(Vec::new()),
        }
    }

    pub fn line_of(&self, span: Option<Range<usize>>) -> usize {
        match span {
            Some(span) => {
                self.source[..span.start.min(self.source.len())]
                    .matches('\n')
                    .count()
                    + 1
            }
            None => 0,
        }
    }

    pub fn push(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let line = self.line_of(span);
        self.list.borrow_mut().push(ConfigError {
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    pub fn into_vec(self) -> Vec<ConfigError> {
        let mut list = self.list.into_inner();
        list.sort_by_key(|e| e.line);
        list
    }

    pub fn is_empty(&self) -> bool {
        self.list.borrow().is_empty()
    }
}

/// One table being read. Keys that are read are remembered; [`Section::finish`] reports the rest
/// as unknown.
pub struct Section<'a, 's> {
    table: &'a dyn TableLike,
    path: String,
    span: Option<Range<usize>>,
    used: RefCell<HashSet<String>>,
    errors: &'a Errors<'s>,
}

impl<'a, 's> Section<'a, 's> {
    pub fn new(
        table: &'a dyn TableLike,
        path: impl Into<String>,
        span: Option<Range<usize>>,
        errors: &'a Errors<'s>,
    ) -> Self {
        Section {
            table,
            path: path.into(),
            span,
            used: RefCell::new(HashSet::new()),
            errors,
        }
    }

    /// Where this section's errors go (for a sub-table read by hand).
    pub fn errors(&self) -> &'a Errors<'s> {
        self.errors
    }

    /// The full dotted name of `key` in this section.
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Reports a problem with `key` at its line (or the section's, if the key is absent).
    pub fn error(&self, key: &str, message: impl Into<String>) {
        let span = self
            .table
            .key(key)
            .and_then(|k| k.span())
            .or_else(|| self.span.clone());
        self.errors.push(span, self.key_path(key), message);
    }

    pub fn item(&self, key: &str) -> Option<&'a Item> {
        self.used.borrow_mut().insert(key.to_string());
        self.table.get(key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    fn value(&self, key: &str, kind: &str) -> Option<&'a Value> {
        let item = self.item(key)?;
        match item.as_value() {
            Some(v) => Some(v),
            None => {
                self.error(key, format!("expected {kind}, found a table"));
                None
            }
        }
    }

    pub fn string(&self, key: &str) -> Option<String> {
        let value = self.value(key, "a string")?;
        match value.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.error(
                    key,
                    format!("expected a string, found {}", value.type_name()),
                );
                None
            }
        }
    }

    pub fn required_string(&self, key: &str) -> Option<String> {
        if !self.has(key) {
            self.error(key, "is required");
        }
        self.string(key)
    }

    pub fn boolean(&self, key: &str) -> Option<bool> {
        let value = self.value(key, "true or false")?;
        match value.as_bool() {
            Some(b) => Some(b),
            None => {
                self.error(
                    key,
                    format!("expected true or false, found {}", value.type_name()),
                );
                None
            }
        }
    }

    /// An integer within `range`.
    pub fn integer(&self, key: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
        let value = self.value(key, "an integer")?;
        match value.as_integer() {
            Some(n) if range.contains(&n) => Some(n),
            Some(n) => {
                self.error(
                    key,
                    format!("{n} is out of range ({} to {})", range.start(), range.end()),
                );
                None
            }
            None => {
                self.error(
                    key,
                    format!("expected an integer, found {}", value.type_name()),
                );
                None
            }
        }
    }

    /// A duration in humantime form (`90s`, `15m`, `1h 30m`, `7days`).
    pub fn duration(&self, key: &str) -> Option<Duration> {
        let text = self.string(key)?;
        match humantime::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    key,
                    format!(
                        "{text:?} is not a duration ({e}); write e.g. \"90s\", \"15m\", \"1h 30m\""
                    ),
                );
                None
            }
        }
    }

    /// A size (`10MB`, `512 KiB`, or a plain number of bytes).
    pub fn size(&self, key: &str) -> Option<u64> {
        let value = self.value(key, "a size")?;
        if let Some(n) = value.as_integer() {
            if n >= 0 {
                return Some(n as u64);
            }
        }
        let parsed = value.as_str().map(parse_size);
        match parsed {
            Some(Ok(n)) => Some(n),
            Some(Err(e)) => {
                self.error(key, e);
                None
            }
            None => {
                self.error(key, "expected a size such as \"10MB\"");
                None
            }
        }
    }

    /// A string or an array of strings.
    pub fn string_list(&self, key: &str) -> Option<Vec<String>> {
        let value = self.value(key, "a string or a list of strings")?;
        if let Some(s) = value.as_str() {
            return Some(vec![s.to_string()]);
        }
        let Some(array) = value.as_array() else {
            self.error(
                key,
                format!(
                    "expected a string or a list of strings, found {}",
                    value.type_name()
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        for v in array.iter() {
            match v.as_str() {
                Some(s) => out.push(s.to_string()),
                None => {
                    self.errors.push(
                        v.span(),
                        self.key_path(key),
                        format!("expected a string, found {}", v.type_name()),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    /// One of `choices`.
    pub fn choice<T: Copy>(&self, key: &str, choices: &[(&str, T)]) -> Option<T> {
        let text = self.string(key)?;
        match choices
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&text))
        {
            Some((_, v)) => Some(*v),
            None => {
                let names: Vec<_> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
                self.error(key, format!("{text:?} is not one of {}", names.join(", ")));
                None
            }
        }
    }

    /// A sub-table.
    pub fn section(&self, key: &str) -> Option<Section<'a, 's>> {
        let item = self.item(key)?;
        match item.as_table_like() {
            Some(table) => Some(Section::new(
                table,
                self.key_path(key),
                item.span(),
                self.errors,
            )),
            None => {
                self.error(key, "expected a table");
                None
            }
        }
    }

    /// Reports every key of this section that nobody read.
    pub fn finish(self) {
        let used = self.used.borrow();
        for (key, _) in self.table.iter() {
            if !used.contains(key) {
                self.error(key, "unknown key");
            }
        }
    }
}

/// Parses `10MB`, `1.5 GB`, `512KiB`, `2048`: KB, MB, GB are powers of 1000; KiB, MiB, GiB of 1024.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write e.g. \"10MB\""))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KB, MB, GB, KiB, MiB or GiB)"
            ))
        }
    };
    Ok((number * factor as f64).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1.5 GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert!(parse_size("ten MB").is_err());
        assert!(parse_size("10 parsecs").is_err());
    }
}
