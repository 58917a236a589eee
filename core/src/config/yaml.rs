//! A YAML document as a tree of nodes that know where they stand in the file,
//! so every config error can name line and column. Parsing is done by
//! `serde-saphyr`; this module only keeps positions and offers typed lookups
//! that turn a wrong shape into a [`ConfigError`] saying what was expected.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::ConfigError;

/// One YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, as written.
    Number(String),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<(Node, Node)>),
}

/// A value with its place in the file (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(d)?;
        Ok(Node {
            value: spanned.value,
            line: spanned.referenced.line() as usize,
            column: spanned.referenced.column() as usize,
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.to_string()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Number(v.to_string()))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(Value::Number(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(v.to_string()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Value, E> {
        Err(E::custom("binary values are not supported here"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<Node, Node>()? {
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }
}

/// A parsed YAML file: its root node and its path, for error messages.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file, as named to the user.
    pub file: PathBuf,
    /// The root value (`Null` for an empty file).
    pub root: Node,
}

impl Document {
    /// Reads and parses a file.
    pub fn read(file: &Path) -> Result<Document, ConfigError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| ConfigError::new(file, format!("cannot read the file: {e}")))?;
        Document::parse(file, &text)
    }

    /// Parses YAML text; `file` names it in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Document, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Document {
                file: file.to_owned(),
                root: Node {
                    value: Value::Null,
                    line: 1,
                    column: 1,
                },
            });
        }
        match serde_saphyr::from_str_with_options::<Node>(text, options()) {
            Ok(root) => Ok(Document {
                file: file.to_owned(),
                root,
            }),
            Err(err) => {
                let message = syntax_message(&err);
                Err(match err.location() {
                    Some(loc) if loc.line() > 0 => ConfigError::at(
                        file,
                        loc.line() as usize,
                        loc.column().max(1) as usize,
                        message,
                    ),
                    _ => ConfigError::new(file, message),
                })
            }
        }
    }

    /// An error at a node.
    pub fn error_at(&self, node: &Node, message: impl Into<String>) -> ConfigError {
        if node.line == 0 {
            ConfigError::new(&self.file, message)
        } else {
            ConfigError::at(&self.file, node.line, node.column.max(1), message)
        }
    }
}

/// The deepest nesting of sequences and mappings a file may have. Config
/// files need a handful of levels; the limit keeps parsing, which recurses
/// per level, well within a 2 MiB thread stack even in a debug build
/// (where a level costs about 50 KiB of stack).
pub const MAX_DEPTH: usize = 24;

/// The parser's options: its defaults, with [`MAX_DEPTH`].
fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// The parser's message without its own position suffix (we print the
/// position in front, as `file:line:col:`).
fn syntax_message(err: &serde_saphyr::Error) -> String {
    let text = err.to_string();
    if text.contains("budget breached: Depth") || text.contains("recursion limit exceeded") {
        return format!("invalid YAML: nested more than {MAX_DEPTH} levels deep");
    }
    let first = text.lines().next().unwrap_or("").trim();
    let cut = first
        .find(" at line ")
        .map(|i| &first[..i])
        .unwrap_or(first)
        .trim_end_matches(':')
        .trim();
    format!("invalid YAML: {cut}")
}

impl Node {
    /// The value as text if it is a scalar (string, number or bool).
    pub fn as_scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Number(n) => Some(n.clone()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Whether this is `null` (or absent).
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// The entry under `key` when this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_scalar_text().as_deref() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The first entry found under any of `keys`, with the key that matched.
    pub fn get_any<'a>(&'a self, keys: &[&'a str]) -> Option<(&'a str, &'a Node)> {
        keys.iter().find_map(|k| self.get(k).map(|v| (*k, v)))
    }

    /// A short word for the kind of value, for error messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Typed lookups that report a wrong shape at the node's position.
impl Document {
    /// The mapping entries of `node`, or an error saying `what` must be a mapping.
    pub fn mapping<'a>(
        &self,
        node: &'a Node,
        what: &str,
    ) -> Result<&'a [(Node, Node)], ConfigError> {
        match &node.value {
            Value::Map(entries) => Ok(entries),
            _ => Err(self.error_at(
                node,
                format!(
                    "{what} must be a mapping (key: value lines), found {}",
                    node.kind()
                ),
            )),
        }
    }

    /// An optional string: `None` when absent or null.
    pub fn opt_string(
        &self,
        node: Option<&Node>,
        what: &str,
    ) -> Result<Option<String>, ConfigError> {
        match node {
            None => Ok(None),
            Some(n) if n.is_null() => Ok(None),
            Some(n) => match &n.value {
                Value::Str(s) => Ok(Some(s.clone())),
                Value::Number(s) => Ok(Some(s.clone())),
                _ => Err(self.error_at(n, format!("{what} must be a string, found {}", n.kind()))),
            },
        }
    }

    /// A list of message names (a YAML list of strings; absent or null is empty).
    pub fn name_list(&self, node: Option<&Node>, what: &str) -> Result<Vec<String>, ConfigError> {
        let Some(node) = node else {
            return Ok(Vec::new());
        };
        let items = match &node.value {
            Value::Null => return Ok(Vec::new()),
            Value::Seq(items) => items,
            _ => {
                return Err(self.error_at(
                    node,
                    format!(
                        "{what} must be a list of message names, found {}",
                        node.kind()
                    ),
                ));
            }
        };
        let mut names = Vec::with_capacity(items.len());
        for item in items {
            match &item.value {
                Value::Str(s) if !s.trim().is_empty() => names.push(s.clone()),
                Value::Str(_) => {
                    return Err(
                        self.error_at(item, format!("{what}: a message name cannot be empty"))
                    );
                }
                _ => {
                    return Err(self.error_at(
                        item,
                        format!(
                            "{what} must be a list of message names, found {} in it",
                            item.kind()
                        ),
                    ));
                }
            }
        }
        Ok(names)
    }

    /// An optional positive integer.
    pub fn opt_count(&self, node: Option<&Node>, what: &str) -> Result<Option<u64>, ConfigError> {
        match node {
            None => Ok(None),
            Some(n) if n.is_null() => Ok(None),
            Some(n) => match &n.value {
                Value::Number(s) => match s.parse::<u64>() {
                    Ok(v) if v > 0 => Ok(Some(v)),
                    _ => Err(self.error_at(
                        n,
                        format!("{what} must be a whole number above 0, found {s}"),
                    )),
                },
                _ => Err(self.error_at(
                    n,
                    format!("{what} must be a whole number above 0, found {}", n.kind()),
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing: a file nested a few dozen levels deep overflowed
    /// a 2 MiB thread stack in a debug build. Deep nesting is an error now.
    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let file = Path::new("service.yml");
        let ok = format!(
            "a: {}1{}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(Document::parse(file, &ok).is_ok());
        for depth in [MAX_DEPTH + 1, 45, 10_000] {
            let text = format!("a: {}1{}", "[".repeat(depth), "]".repeat(depth));
            let mixed = format!("a: {}1{}", "{b: [".repeat(depth), "]}".repeat(depth));
            let block = (0..depth.min(100)).fold(String::new(), |mut s, i| {
                s.push_str(&format!("{}k:\n", "  ".repeat(i)));
                s
            });
            let unclosed = format!("a: {}", "{b: [".repeat(depth));
            let err = Document::parse(file, &unclosed).unwrap_err();
            assert!(err.message.starts_with("invalid YAML: "), "{err}");
            for text in [text, mixed, block] {
                let err = std::thread::Builder::new()
                    .stack_size(2 << 20)
                    .spawn(move || Document::parse(Path::new("service.yml"), &text))
                    .unwrap()
                    .join()
                    .expect("no stack overflow")
                    .unwrap_err();
                assert_eq!(err.file, file);
                assert_eq!(
                    err.message,
                    format!("invalid YAML: nested more than {MAX_DEPTH} levels deep"),
                    "{err}"
                );
            }
        }
    }
}
