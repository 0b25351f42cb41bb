//! The one place that knows the YAML crates.
//!
//! serde_yaml is archived upstream; we deserialize with its maintained fork
//! `serde_yaml_ng` (same behaviour, same error positions) wrapped in
//! `serde_path_to_error` for key paths. Serde stops at the first structural
//! error and keeps no positions for values that deserialized fine, so a second
//! pass with `yaml-rust2`'s marked event parser indexes every key path to its
//! line and column; pure validators then report paths, and [`Positions`] turns
//! them into `file:line:col`. Swapping the YAML crate touches this file only.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::diag::{Diagnostic, Problem, Severity};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Key path (`steps[3].bake.sessions`) → where it is written in the file.
#[derive(Debug, Default, Clone)]
pub struct Positions {
    map: HashMap<String, Pos>,
}

impl Positions {
    /// Index every node of `text`. A file that does not parse yields an empty
    /// index; serde reports the syntax error with its own position.
    pub fn index(text: &str) -> Positions {
        Positions::try_index(text).unwrap_or_default()
    }

    /// Like [`Positions::index`], but None when `text` is not valid YAML.
    fn try_index(text: &str) -> Option<Positions> {
        let mut rx = Indexer::default();
        let mut parser = Parser::new_from_str(text);
        parser.load(&mut rx, false).ok()?;
        Some(Positions { map: rx.map })
    }

    /// The position of `path`, or of its nearest ancestor that is written in
    /// the file (a missing key is reported where its parent is).
    pub fn find(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.map.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// Turn a validator's problem into a diagnostic placed in `file`.
    pub fn place(&self, file: &str, problem: Problem) -> Diagnostic {
        let pos = self.find(&problem.path);
        Diagnostic {
            severity: problem.severity,
            file: file.to_string(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            path: problem.path,
            message: problem.message,
            fix: problem.fix,
        }
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<(String, Marker)>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Indexer {
    stack: Vec<Frame>,
    map: HashMap<String, Pos>,
}

fn pos(m: Marker) -> Pos {
    Pos {
        line: m.line(),
        column: m.col() + 1,
    }
}

impl Indexer {
    /// Path of the node about to start, and the marker that best points at
    /// it: a scalar's own position, or the key that introduces a collection.
    /// Returns None when the event is a mapping key.
    fn node_path(&mut self, mark: Marker, scalar: Option<&str>) -> Option<(String, Marker)> {
        match self.stack.last_mut() {
            None => Some((String::new(), mark)),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some((p, mark))
            }
            Some(Frame::Map { path, key }) => match key.take() {
                None => {
                    // A key. Non-scalar keys do not occur in our formats.
                    let k = scalar.unwrap_or("?").to_string();
                    *key = Some((k, mark));
                    // yaml-rust2 marks a block mapping's start *after* its
                    // first key (`- approval: {min: 1}` was placed at the
                    // `{`), which only matters for a mapping in a sequence:
                    // elsewhere the parent's key places it. A mapping starts
                    // no later than its first key.
                    if let Some(at) = self.map.get_mut(path.as_str()) {
                        let k = pos(mark);
                        if (k.line, k.column) < (at.line, at.column) {
                            *at = k;
                        }
                    }
                    None
                }
                Some((k, key_mark)) => {
                    let p = if path.is_empty() {
                        k
                    } else {
                        format!("{path}.{k}")
                    };
                    let m = if scalar.is_some() { mark } else { key_mark };
                    Some((p, m))
                }
            },
        }
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(ref value, ..) => {
                if let Some((p, m)) = self.node_path(mark, Some(value)) {
                    self.map.entry(p).or_insert(pos(m));
                }
            }
            Event::Alias(_) => {
                if let Some((p, m)) = self.node_path(mark, Some("")) {
                    self.map.entry(p).or_insert(pos(m));
                }
            }
            Event::MappingStart(..) => {
                let (p, m) = self.node_path(mark, None).unwrap_or_default_path(mark);
                self.map.entry(p.clone()).or_insert(pos(m));
                self.stack.push(Frame::Map { path: p, key: None });
            }
            Event::SequenceStart(..) => {
                let (p, m) = self.node_path(mark, None).unwrap_or_default_path(mark);
                self.map.entry(p.clone()).or_insert(pos(m));
                self.stack.push(Frame::Seq { path: p, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

trait OrDefaultPath {
    fn unwrap_or_default_path(self, mark: Marker) -> (String, Marker);
}

impl OrDefaultPath for Option<(String, Marker)> {
    // A collection used as a mapping key: index it under "?" so parsing
    // continues; serde will reject the file anyway.
    fn unwrap_or_default_path(self, mark: Marker) -> (String, Marker) {
        self.unwrap_or_else(|| ("?".to_string(), mark))
    }
}

/// Largest YAML document read (specs are a few KiB, the biggest calendar a
/// few tens): anything larger is refused before parsing.
pub const MAX_BYTES: usize = 1024 * 1024;
/// Deepest nesting of collections. Our formats need five or six levels; the
/// parsers' cost grows with depth, and hostile input nests thousands.
pub const MAX_DEPTH: usize = 32;
/// Most aliases (`*name`) in one document: none of our formats needs them,
/// a few are tolerated, and "billion laughs" needs many.
pub const MAX_ALIASES: usize = 64;
/// A cheap lexical bound on flow nesting (`[[[[…`), checked before any
/// parser runs; loose on purpose (brackets inside quoted text count too),
/// the exact [`MAX_DEPTH`] check follows.
const MAX_FLOW_BRACKETS: usize = 256;

fn limit_error(file: &str, line: Option<usize>, message: String, fix: &str) -> Box<Diagnostic> {
    Box::new(Diagnostic {
        severity: Severity::Error,
        file: file.to_string(),
        line,
        column: None,
        path: String::new(),
        message,
        fix: fix.to_string(),
    })
}

/// Size, nesting and alias limits, checked in linear time before the
/// deserializer sees the text, so no document can make parsing slow or big.
pub fn check_limits(file: &str, text: &str) -> Result<(), Box<Diagnostic>> {
    if text.len() > MAX_BYTES {
        return Err(limit_error(
            file,
            None,
            format!(
                "the document is {} bytes, above the limit of {MAX_BYTES}",
                text.len()
            ),
            "a spec or calendar is a few KiB; check that this is the right file",
        ));
    }
    // Lexical pre-pass: unclosed `[`/`{` outside comments.
    let (mut open, mut line, mut comment, mut prev_space) = (0usize, 1usize, false, true);
    for c in text.chars() {
        match c {
            '\n' => {
                line += 1;
                comment = false;
            }
            '#' if prev_space => comment = true,
            '[' | '{' if !comment => {
                open += 1;
                if open > MAX_FLOW_BRACKETS {
                    return Err(limit_error(
                        file,
                        Some(line),
                        format!("the document nests deeper than {MAX_DEPTH} levels"),
                        "flatten it: specs and calendars need only a few levels",
                    ));
                }
            }
            ']' | '}' if !comment => open = open.saturating_sub(1),
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    // Exact pass over the parser's events: depth and aliases.
    let mut parser = Parser::new_from_str(text);
    let (mut depth, mut aliases) = (0usize, 0usize);
    loop {
        let Ok((ev, mark)) = parser.next_token() else {
            // A syntax error: the deserializer reports it with its place.
            return Ok(());
        };
        match ev {
            Event::StreamEnd => return Ok(()),
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(limit_error(
                        file,
                        Some(mark.line()),
                        format!("the document nests deeper than {MAX_DEPTH} levels"),
                        "flatten it: specs and calendars need only a few levels",
                    ));
                }
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            Event::Alias(_) => {
                aliases += 1;
                if aliases > MAX_ALIASES {
                    return Err(limit_error(
                        file,
                        Some(mark.line()),
                        format!("the document uses more than {MAX_ALIASES} aliases (*name)"),
                        "write the values out; aliases are not needed in specs or calendars",
                    ));
                }
            }
            _ => {}
        }
    }
}

/// Deserialize `text` into `T`, or describe the first structural error
/// (syntax, unknown key, wrong type, missing key) as a diagnostic for `file`.
/// [`check_limits`] runs first.
pub fn from_str<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, Box<Diagnostic>> {
    check_limits(file, text)?;
    if text.trim().is_empty() {
        return Err(Box::new(Diagnostic {
            severity: Severity::Error,
            file: file.to_string(),
            line: None,
            column: None,
            path: String::new(),
            message: "the file is empty".into(),
            fix: "write the document described in the README".into(),
        }));
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = e.into_inner();
        let loc = inner.location();
        let mut line = loc.as_ref().map(|l| l.line());
        let mut column = loc.as_ref().map(|l| l.column());
        let mut path = path;
        let mut message = strip_serde_noise(&inner.to_string());
        let fix = match fix_for(&message) {
            Some(fix) => fix.to_string(),
            None => match Positions::try_index(text) {
                // A syntax error. serde_path_to_error's path is wherever the
                // deserializer had got to when the scanner failed (`?`, or
                // the key *before* the error), which names the wrong key;
                // the line and column are right, so keep only those.
                None => {
                    path.clear();
                    "fix the YAML syntax at this place".to_string()
                }
                // An error raised after a value was read, such as a step's
                // `try_from`: serde_yaml_ng places it at the enclosing
                // collection (`steps[2]` was reported on the line of
                // `steps[0]`), so place it by its key path instead. Such
                // messages are written `what is wrong; how to fix it`.
                Some(positions) => {
                    if let Some(p) = positions.find(&path) {
                        line = Some(p.line);
                        column = Some(p.column);
                    }
                    match message.split_once("; ") {
                        Some((what, how)) => {
                            let how = how.to_string();
                            message.truncate(what.len());
                            how
                        }
                        None => "correct the value at this key".to_string(),
                    }
                }
            },
        };
        Box::new(Diagnostic {
            severity: Severity::Error,
            file: file.to_string(),
            line,
            column,
            path,
            message,
            fix,
        })
    })
}

/// serde_yaml's message repeats its own path prefix and the position, which
/// the diagnostic already carries in a fixed place.
fn strip_serde_noise(msg: &str) -> String {
    let mut m = msg.trim().to_string();
    if let Some(i) = m.rfind(" at line ")
        && m[i..].contains(" column ")
    {
        m.truncate(i);
    }
    // "steps[1].bake: unknown field ..." → "unknown field ..."
    if let Some((head, tail)) = m.split_once(": ") {
        let looks_like_path = !head.contains(' ') && !head.is_empty();
        if looks_like_path {
            m = tail.to_string();
        }
    }
    m
}

/// The fix for serde's own errors; None for syntax errors and for custom
/// errors (ours, from `try_from`), which [`from_str`] handles.
fn fix_for(message: &str) -> Option<&'static str> {
    if message.starts_with("unknown field") {
        Some("remove the key or correct its spelling")
    } else if message.starts_with("unknown variant") {
        Some("use one of the values listed")
    } else if message.starts_with("missing field") {
        Some("add the key")
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        Some("write a value of the expected type (quote text; write numbers without quotes)")
    } else if message.starts_with("duplicate") {
        Some("keep only one of the duplicated keys")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_scalars_and_collections() {
        let text = "name: a\nsteps:\n  - set_weight: 5\n  - bake:\n      sessions: 0\n";
        let p = Positions::index(text);
        assert_eq!(p.find("name"), Some(Pos { line: 1, column: 7 }));
        assert_eq!(
            p.find("steps[0].set_weight"),
            Some(Pos {
                line: 3,
                column: 17
            })
        );
        assert_eq!(
            p.find("steps[1].bake.sessions"),
            Some(Pos {
                line: 5,
                column: 17
            })
        );
        // A collection is placed at the key that introduces it.
        assert_eq!(p.find("steps[1].bake"), Some(Pos { line: 4, column: 5 }));
        // A missing key falls back to its parent.
        assert_eq!(
            p.find("steps[1].bake.segment"),
            Some(Pos { line: 4, column: 5 })
        );
    }

    #[test]
    fn structural_error_has_path_and_position() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        let e = from_str::<T>("f.yaml", "a: 1\nb: 2\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.starts_with("unknown field `b`"), "{}", e.message);
        assert_eq!(e.to_string().split(": ").next(), Some("f.yaml:2:1"));
    }
}

/// A mapping that keeps its keys in file order (serde's maps sort or hash).
/// Duplicate keys are kept so the validator can report them.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderedMap<T>(pub Vec<(String, T)>);

impl<T> Default for OrderedMap<T> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for OrderedMap<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = OrderedMap<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, T>()? {
                    out.push((k, v));
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}
