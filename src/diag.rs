//! Diagnostics for the files admins write: `crier.yaml` and `jobs/*.yaml`.
//!
//! Every problem found in a file becomes one [`Diagnostic`] printed as
//! `path:line:col: field: what is wrong (what would be right)`, the shape compilers use,
//! so editors and CI logs link straight to the spot. serde only reports the first
//! structural error of a document, so semantic validation runs on the parsed value and
//! asks a [`SourceMap`] (built from the YAML event stream, which keeps positions) where a
//! field sits in the text.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use saphyr_parser::{Event, Parser, Span};

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line; 0 when the position is unknown.
    pub line: usize,
    /// 1-based column; 0 when the position is unknown.
    pub col: usize,
    /// Dotted path of the field, e.g. `schedule.cron` or `recipients.where.status[1]`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        // One line per problem, whatever a quoted value holds.
        let message = one_line(&self.message);
        if self.field.is_empty() {
            write!(f, ": {message}")
        } else {
            write!(f, ": {}: {message}", one_line(&self.field))
        }
    }
}

/// `text` with line breaks and other control characters escaped (`\n`).
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

/// All problems found in a set of files, in the order they were found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    /// Orders each file's problems by position, files staying in the order met.
    pub fn sort_by_position(&mut self) {
        let mut order: Vec<PathBuf> = Vec::new();
        for d in &self.0 {
            if !order.contains(&d.file) {
                order.push(d.file.clone());
            }
        }
        self.0.sort_by_key(|d| {
            let file = order.iter().position(|f| *f == d.file).unwrap_or(0);
            (file, d.line, d.col)
        });
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// Positions of every key and value of one YAML document, by dotted path.
#[derive(Debug, Default)]
pub struct SourceMap {
    keys: HashMap<String, Pos>,
    values: HashMap<String, Pos>,
    scalars: HashMap<String, String>,
    /// Keys written twice in one mapping, in text order (the second occurrence is kept).
    duplicates: Vec<String>,
    /// Where each YAML document of the text starts.
    documents: Vec<Pos>,
    /// The position just past the text (where an unexpected end is).
    end: Pos,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

impl SourceMap {
    /// Builds the map; a document that does not parse yields an empty map (serde reports
    /// the syntax error itself, with its position).
    pub fn new(text: &str) -> SourceMap {
        let mut map = SourceMap::default();
        let lines = text.split('\n').count();
        let last = text.rsplit('\n').next().unwrap_or_default();
        map.end = Pos {
            line: lines,
            col: last.chars().count() + 1,
        };
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let pos = pos_of(&span);
            match event {
                Event::DocumentStart(_) => map.documents.push(pos),
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map { path, key }) = stack.last_mut()
                        && key.is_none()
                    {
                        let child = join(path, &value);
                        if map.keys.insert(child.clone(), pos).is_some() {
                            map.duplicates.push(child.clone());
                        }
                        *key = Some(value.into_owned());
                        continue;
                    }
                    if let Some(path) = map.place_value(&mut stack, pos) {
                        map.scalars.insert(path, value.into_owned());
                    }
                }
                Event::MappingStart(..) => {
                    let path = map.place_value(&mut stack, pos).unwrap_or_default();
                    stack.push(Frame::Map { path, key: None });
                }
                Event::SequenceStart(..) => {
                    let path = map.place_value(&mut stack, pos).unwrap_or_default();
                    stack.push(Frame::Seq { path, index: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::Alias(_) => {
                    map.place_value(&mut stack, pos);
                }
                _ => {}
            }
        }
        map
    }

    /// Records a value node's position under its path and advances the parent frame.
    fn place_value(&mut self, stack: &mut [Frame], pos: Pos) -> Option<String> {
        let path = match stack.last_mut() {
            None => String::new(),
            Some(Frame::Map { path, key }) => {
                let k = key.take()?;
                join(path, &k)
            }
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                p
            }
        };
        self.values.insert(path.clone(), pos);
        Some(path)
    }

    /// Where the value of `path` starts, else where its key is, else the key of the
    /// nearest parent that is in the document.
    pub fn locate(&self, path: &str) -> Pos {
        if let Some(pos) = self.values.get(path) {
            return *pos;
        }
        let mut p = path.to_string();
        loop {
            match p.rfind(['.', '[']) {
                // `phone[0]` of a single `phone: "12"` is that scalar itself.
                Some(i) if p.as_bytes()[i] == b'[' => {
                    p.truncate(i);
                    if let Some(pos) = self
                        .scalars
                        .contains_key(&p)
                        .then(|| self.values.get(&p))
                        .flatten()
                    {
                        return *pos;
                    }
                }
                Some(i) => p.truncate(i),
                None => return Pos { line: 1, col: 1 },
            }
            if let Some(pos) = self.keys.get(&p).or_else(|| self.values.get(&p)) {
                return *pos;
            }
        }
    }

    /// The path of the list item under `parent` whose text is `value` (`parent[2]`).
    pub fn find_item(&self, parent: &str, value: &str) -> Option<String> {
        let prefix = format!("{parent}[");
        self.scalars
            .iter()
            .filter(|(p, v)| p.starts_with(&prefix) && *v == value)
            .map(|(p, _)| p.clone())
            .min_by_key(|p| self.values.get(p).map(|pos| (pos.line, pos.col)))
    }

    /// The entries directly under the mapping `parent` that have no key `name`.
    pub fn children_without(&self, parent: &str, name: &str) -> Vec<String> {
        let prefix = format!("{parent}.");
        let mut found: Vec<String> = self
            .keys
            .keys()
            .filter(|k| {
                k.strip_prefix(&prefix)
                    .is_some_and(|rest| !rest.contains('.'))
            })
            .filter(|k| !self.keys.contains_key(&format!("{k}.{name}")))
            .cloned()
            .collect();
        found.sort();
        found
    }

    /// The first scalar under `prefix` (in text order) whose text is `value`, and where.
    pub fn find_scalar(&self, prefix: &str, value: &str) -> Option<(String, Pos)> {
        self.scalars
            .iter()
            .filter(|(p, v)| p.starts_with(&format!("{prefix}.")) && *v == value)
            .filter_map(|(p, _)| self.values.get(p).map(|pos| (p.clone(), *pos)))
            .min_by_key(|(_, pos)| (pos.line, pos.col))
    }

    /// Where the key of `path` is written (for unknown or duplicate keys).
    pub fn locate_key(&self, path: &str) -> Pos {
        self.keys
            .get(path)
            .copied()
            .unwrap_or_else(|| self.locate(path))
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Collects diagnostics for one file, placing each with the file's [`SourceMap`].
pub struct FileReport<'a> {
    pub file: &'a Path,
    pub map: &'a SourceMap,
    pub diags: Diagnostics,
}

impl<'a> FileReport<'a> {
    pub fn new(file: &'a Path, map: &'a SourceMap) -> Self {
        FileReport {
            file,
            map,
            diags: Diagnostics::default(),
        }
    }

    /// A problem with the value at `field`.
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        let pos = self.map.locate(field);
        self.push(pos, field, message.into());
    }

    /// A problem with the key at `field` itself.
    pub fn key_error(&mut self, field: &str, message: impl Into<String>) {
        let pos = self.map.locate_key(field);
        self.push(pos, field, message.into());
    }

    fn push(&mut self, pos: Pos, field: &str, message: String) {
        self.diags.0.push(Diagnostic {
            file: self.file.to_path_buf(),
            line: pos.line,
            col: pos.col,
            field: field.to_string(),
            message,
        });
    }
}

/// Turns a serde_yaml error into a diagnostic, rewriting serde's wording into crier's
/// (`unknown field` gains a "did you mean" suggestion).
pub fn from_serde(file: &Path, map: &SourceMap, err: &serde_yaml::Error) -> Diagnostic {
    let full = err.to_string();
    // serde_yaml appends " at line L column C"; the position is reported separately.
    let text = match full.rfind(" at line ") {
        Some(i) => &full[..i],
        None => full.as_str(),
    };
    let (mut field, mut message) = split_path(text);
    let (line, col) = match err.location() {
        Some(l) => (l.line(), l.column()),
        None => (0, 0),
    };
    // A syntax error inside something that started earlier (an unclosed quote):
    // `found … at line A column B, while scanning … at line C column D`. Point at the
    // start, where the mistake usually is, and keep where the parser gave up.
    if let Some((problem, context)) = full.split_once(", while ")
        && let Some((found_at, problem)) = mark(problem)
        && let Some((started_at, context)) = mark(context)
    {
        return Diagnostic {
            file: file.to_path_buf(),
            line: started_at.line,
            col: started_at.col,
            field: String::new(),
            message: format!(
                "{problem} (at line {}, column {}) while {context} that starts here",
                found_at.line, found_at.col
            ),
        };
    }
    // `duplicate field` comes from a typed read, `duplicate entry` from a plain one
    // (which names no path: the text itself knows which key it was).
    let duplicate = match message.strip_prefix("duplicate field `") {
        Some(rest) => {
            let name = rest.split('`').next().unwrap_or(rest);
            Some(if field.is_empty() {
                name.to_string()
            } else {
                format!("{field}.{name}")
            })
        }
        None if message.starts_with("duplicate entry with key") => map.duplicates.first().cloned(),
        None => None,
    };
    if let Some(path) = duplicate {
        let name = path.rsplit('.').next().unwrap_or(&path).to_string();
        // The map keeps the last occurrence of a key: the duplicate.
        let pos = map.locate_key(&path);
        return Diagnostic {
            file: file.to_path_buf(),
            line: pos.line,
            col: pos.col,
            field: path,
            message: format!("`{name}` is given twice (write each field once)"),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let candidates = backticked(expected);
        let path = if field.is_empty() {
            name.to_string()
        } else {
            format!("{field}.{name}")
        };
        message = match suggest(name, candidates.iter().map(String::as_str)) {
            Some(s) => format!("unknown field `{name}` (did you mean `{s}`?)"),
            None => format!(
                "unknown field `{name}` (expected one of {})",
                list(&candidates)
            ),
        };
        let pos = map.locate_key(&path);
        field = path;
        return Diagnostic {
            file: file.to_path_buf(),
            line: if pos.line > 0 { pos.line } else { line },
            col: if pos.line > 0 { pos.col } else { col },
            field,
            message,
        };
    }
    let mut position = err.location().map(|l| (l.line(), l.column()));
    if position.is_none() {
        // serde_yaml has no position for these; place them from the text itself.
        let pos = if message.contains("more than one document") {
            message = "a file holds one YAML document, and another starts here \
                (remove the `---` and what follows it)"
                .into();
            map.documents
                .get(1)
                .copied()
                .unwrap_or(Pos { line: 1, col: 1 })
        } else if message.starts_with("EOF while parsing") {
            map.end
        } else if field.is_empty() {
            Pos { line: 1, col: 1 }
        } else {
            map.locate(&field)
        };
        position = Some((pos.line, pos.col));
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        // In a list, point at the item itself rather than at the list.
        if let Some(item) = map.find_item(&field, name) {
            let pos = map.locate(&item);
            position = Some((pos.line, pos.col));
            field = item;
        }
        let candidates = backticked(expected);
        message = match suggest(name, candidates.iter().map(String::as_str)) {
            Some(s) => format!(
                "unknown value `{name}` (did you mean `{s}`? expected one of {})",
                list(&candidates)
            ),
            None => format!(
                "unknown value `{name}` (expected one of {})",
                list(&candidates)
            ),
        };
    }
    // Inside an internally tagged value (a provider: `type: bulksms`), serde's path stops
    // at the map holding it, and its position is the map's. A value the message quotes
    // finds the field itself; a missing field, the one entry that lacks it.
    if !field.is_empty()
        && map
            .values
            .get(&field)
            .is_some_and(|p| position == Some((p.line, p.col)))
    {
        let quoted = backticked(&message);
        if let Some((path, pos)) = quoted.iter().find_map(|v| map.find_scalar(&field, v)) {
            field = path;
            position = Some((pos.line, pos.col));
        } else if let Some(rest) = message.strip_prefix("missing field `")
            && let Some(name) = rest.split('`').next()
            && let [entry] = map.children_without(&field, name).as_slice()
        {
            let pos = map.locate_key(entry);
            field = entry.clone();
            position = Some((pos.line, pos.col));
        }
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest).to_string();
        message = format!("missing required field `{name}`");
        field = if field.is_empty() {
            name.to_string()
        } else {
            format!("{field}.{name}")
        };
    }
    let (line, col) = position.unwrap_or((line, col));
    Diagnostic {
        file: file.to_path_buf(),
        line,
        col,
        field,
        message,
    }
}

/// `text at line L column C` → the position and `text`.
fn mark(text: &str) -> Option<(Pos, &str)> {
    let (text, at) = text.rsplit_once(" at line ")?;
    let (line, col) = at.split_once(" column ")?;
    let pos = Pos {
        line: line.trim().parse().ok()?,
        col: col.trim().parse().ok()?,
    };
    Some((pos, text))
}

/// serde_yaml prefixes nested errors with the path: `schedule.cron: invalid type…`.
fn split_path(text: &str) -> (String, String) {
    if let Some((head, tail)) = text.split_once(": ")
        && !head.is_empty()
        && !head.contains(' ')
        && !head.contains('`')
    {
        return (head.to_string(), tail.to_string());
    }
    (String::new(), text.to_string())
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, v)| v.to_string())
        .collect()
}

fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The closest candidate to `word`, if one is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&word, &c.to_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_map_places_nested_keys_values_and_list_items() {
        let text = "name: x\nschedule:\n  cron: \"0 9 * *\"\nrecipients:\n  where:\n    status: [active, blockd]\n";
        let map = SourceMap::new(text);
        assert_eq!(map.locate("schedule.cron"), Pos { line: 3, col: 9 });
        assert_eq!(map.locate_key("schedule.cron"), Pos { line: 3, col: 3 });
        assert_eq!(
            map.locate("recipients.where.status[1]"),
            Pos { line: 6, col: 22 }
        );
        // A path that is not in the document falls back to its nearest parent.
        assert_eq!(map.locate("schedule.timezone"), Pos { line: 2, col: 1 });
    }

    #[test]
    fn errors_serde_cannot_place_are_placed_from_the_text() {
        let file = Path::new("job.yaml");
        let text = "send_to: sms\n---\nsend_to: email\n";
        let err = serde_yaml::from_str::<serde_yaml::Value>(text).unwrap_err();
        let d = from_serde(file, &SourceMap::new(text), &err);
        assert_eq!((d.line, d.col), (2, 1), "{d}");
        assert!(d.message.contains("one YAML document"), "{d}");
        // The end of the text, for a document cut short.
        let text = "send_to: \"sms\n";
        let err = serde_yaml::from_str::<serde_yaml::Value>(text).unwrap_err();
        let d = from_serde(file, &SourceMap::new(text), &err);
        assert!(d.line >= 1 && d.col >= 1, "{d}");
    }

    #[test]
    fn an_unclosed_quote_is_placed_where_it_opens() {
        let text = "send_to: sms\nmessage: \"hi\nrecipients: {}\n";
        let err = serde_yaml::from_str::<serde_yaml::Value>(text).unwrap_err();
        let d = from_serde(Path::new("job.yaml"), &SourceMap::new(text), &err);
        assert_eq!(
            d.to_string(),
            "job.yaml:2:10: found unexpected end of stream (at line 4, column 1) \
             while scanning a quoted scalar that starts here"
        );
    }

    #[test]
    fn a_duplicate_key_is_placed_at_its_second_occurrence() {
        let text = "send_to: sms\nmessage: hi\nmessage: hello\n";
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Job {
            send_to: String,
            message: String,
        }
        let err = serde_yaml::from_str::<Job>(text).unwrap_err();
        let d = from_serde(Path::new("job.yaml"), &SourceMap::new(text), &err);
        assert_eq!(
            d.to_string(),
            "job.yaml:3:1: message: `message` is given twice (write each field once)"
        );
    }

    #[test]
    fn a_diagnostic_prints_on_one_line() {
        let d = Diagnostic {
            file: "crier.yaml".into(),
            line: 3,
            col: 9,
            field: "token".into(),
            message: "unclosed `${` in `a\nb\u{1b}[2J`".into(),
        };
        assert_eq!(
            d.to_string(),
            "crier.yaml:3:9: token: unclosed `${` in `a\\nb\\u{1b}[2J`"
        );
    }

    #[test]
    fn suggests_close_names_only() {
        let names = ["schedule", "recipients", "send_to"];
        assert_eq!(suggest("shedule", names), Some("schedule"));
        assert_eq!(suggest("zzz", names), None);
    }
}
