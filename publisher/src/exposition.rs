//! A parser for the Prometheus text exposition format, version 0.0.4, written for the job of
//! reading ipamd's `/metrics` endpoint.
//!
//! What it does and why:
//!
//! - It is zero-copy. A [`Sample`] borrows its family name, its metric name and its raw label
//!   text from the input; label values are only decoded when the caller asks for them
//!   ([`Sample::labels`]), and only a value that contains an escape sequence (`\\`, `\"`, `\n`)
//!   is copied into an owned string.
//! - It lets the caller skip whole families without paying for them (the publisher's fast
//!   path). [`Samples::filtered`] takes a filter over family names that is called once per
//!   family; a sample line of a rejected family is recognised by comparing its start with the
//!   family's name (plus a suffix its type allows) and skipped with a vectorised search for
//!   the line end (`memchr`), without tokenising it, and a rejected family's HELP docstring is
//!   skipped the same way. On a real aws-node endpoint the `go_*`, `process_*` and unpublished
//!   `awscni_*` families are most of the bytes, and none of them are needed.
//! - It reads the usual line shapes in one pass. `# HELP`/`# TYPE` lines with single spaces
//!   and samples written as exporters write them (`name{label="value"} value`, no blanks in
//!   the label block, no escapes, no timestamp) are parsed without first finding the line end;
//!   anything else goes through the general tokenising parser, which accepts the whole grammar
//!   and reports errors. Both give the same samples for the lines the first accepts (the
//!   parser tests and `publisher/tests/parser_differential.rs` check the filtered and the full
//!   parse against each other on every corpus file). Names are scanned and compared eight bytes
//!   at a time, and decimal values take an exact fast path (one multiplication or division,
//!   Clinger's).
//! - It knows which family a sample belongs to. A family gets its name and type from its
//!   `# TYPE` line. The `_sum` and `_count` samples of a summary and the `_bucket`, `_sum` and
//!   `_count` samples of a histogram belong to that family and carry a [`Suffix`]. A counter
//!   whose own name ends in `_count` or `_total` (ipamd's `awscni_add_ip_req_count`) is a family
//!   of its own, because its `# TYPE` line names it in full. A sample with no matching `# TYPE`
//!   line is an untyped family named after the sample.
//! - Malformed input is an error naming the line and the reason ([`ParseError`]); it never
//!   panics, whatever the input (the parser is fuzzed, see `publisher/fuzz`). After an error the
//!   iterator ends.
//!
//! Deliberate leniencies, all of which Go's `expfmt` parser rejects but which cannot make us
//! misread a well-formed exposition: the sample lines of a family the filter rejected are
//! checked only for their metric name, and its HELP docstring not at all; duplicate label
//! names, a second `# TYPE` line for the same name and families split into several groups are
//! not detected (the grammar says families come in one group; detecting the rest would need
//! memory proportional to the input).
//!
//! Accepted syntax, per line (blanks are spaces and tabs; a trailing `\r` is ignored so CRLF
//! input works): empty or blank lines; `#` comments, of which `# HELP name docstring` and
//! `# TYPE name counter|gauge|summary|histogram|untyped` are interpreted; and samples
//! `name[{label="value",...}] value [timestamp]`, where `value` is a float (including `NaN`,
//! `+Inf` and `-Inf`) and `timestamp` an integer in milliseconds.

use std::borrow::Cow;
use std::fmt;

use thiserror::Error;

/// The type of a metric family, from its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Summary,
    Histogram,
    /// Declared `untyped`, or no `# TYPE` line at all.
    Untyped,
}

impl MetricType {
    /// The type's keyword in a `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Summary => "summary",
            Self::Histogram => "histogram",
            Self::Untyped => "untyped",
        }
    }

    fn from_keyword(keyword: &[u8]) -> Option<Self> {
        match keyword {
            b"counter" => Some(Self::Counter),
            b"gauge" => Some(Self::Gauge),
            b"summary" => Some(Self::Summary),
            b"histogram" => Some(Self::Histogram),
            b"untyped" => Some(Self::Untyped),
            _ => None,
        }
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Which part of its family a sample is: the family's own name, or one of the suffixed
/// samples of a summary or histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suffix {
    /// The sample's name is the family's name: the value of a counter, gauge or untyped family,
    /// or a quantile of a summary.
    None,
    /// `<family>_sum` of a summary or histogram.
    Sum,
    /// `<family>_count` of a summary or histogram.
    Count,
    /// `<family>_bucket` of a histogram.
    Bucket,
}

/// One sample line, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    /// The family the sample belongs to (for `x_sum` of summary `x`, that is `x`).
    pub family: &'a str,
    /// The family's type from its `# TYPE` line.
    pub family_type: MetricType,
    /// The sample's own metric name as written.
    pub name: &'a str,
    /// Which part of the family this sample is.
    pub suffix: Suffix,
    /// The label text between the braces exactly as written (escapes not decoded), or `""`
    /// when the sample has no labels. It has been validated, so [`Sample::labels`] cannot fail.
    pub raw_labels: &'a str,
    /// The value; may be NaN or infinite.
    pub value: f64,
    /// The optional timestamp in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    /// The 1-based line number of the sample in the input.
    pub line: usize,
}

impl<'a> Sample<'a> {
    /// The sample's labels in the order written, decoding escaped values on the way.
    pub fn labels(&self) -> Labels<'a> {
        Labels {
            rest: self.raw_labels,
        }
    }

    /// The value of the label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<Cow<'a, str>> {
        self.labels()
            .find(|label| label.name == name)
            .map(|label| label.value)
    }
}

/// One decoded label of a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label<'a> {
    pub name: &'a str,
    /// Borrowed from the input unless the value contained an escape sequence.
    pub value: Cow<'a, str>,
}

/// Iterator over the labels of a [`Sample`], decoding values lazily.
#[derive(Debug, Clone)]
pub struct Labels<'a> {
    /// The not yet decoded rest of a validated label block (the text between the braces).
    rest: &'a str,
}

impl<'a> Iterator for Labels<'a> {
    type Item = Label<'a>;

    fn next(&mut self) -> Option<Label<'a>> {
        // The text was validated by the parser, so this only needs to find the pieces again.
        // It still returns `None` rather than panicking on anything unexpected.
        let text = self.rest;
        let bytes = text.as_bytes();
        // Exporters write no blanks in label blocks: `name="value"` right at the start, or
        // after the comma that ended the previous label.
        let mut position = match bytes.first() {
            Some(b',') => 1,
            Some(_) => 0,
            None => return None,
        };
        if !bytes
            .get(position)
            .is_some_and(|byte| has_class(*byte, LABEL_START))
        {
            position = skip_blanks(bytes, position);
            if bytes.get(position) == Some(&b',') {
                position = skip_blanks(bytes, position + 1);
            }
        }
        let name_start = position;
        position = skip_name_bytes(bytes, position, false);
        if position == name_start {
            self.rest = "";
            return None;
        }
        let name = text.get(name_start..position)?;
        if bytes.get(position..position + 2) == Some(b"=\"") {
            position += 1;
        } else {
            position = skip_blanks(bytes, position);
            if bytes.get(position) != Some(&b'=') {
                self.rest = "";
                return None;
            }
            position = skip_blanks(bytes, position + 1);
            if bytes.get(position) != Some(&b'"') {
                self.rest = "";
                return None;
            }
        }
        let value_start = position + 1;
        let mut cursor = value_start;
        let mut escaped = false;
        loop {
            let Some(offset) = bytes.get(cursor..).and_then(quote_or_backslash) else {
                self.rest = "";
                return None;
            };
            cursor += offset;
            if bytes.get(cursor) == Some(&b'"') {
                break;
            }
            escaped = true;
            cursor += 2;
        }
        let raw_value = text.get(value_start..cursor)?;
        self.rest = text.get(cursor + 1..).unwrap_or("");
        let value = if escaped {
            Cow::Owned(unescape_label_value(raw_value))
        } else {
            Cow::Borrowed(raw_value)
        };
        Some(Label { name, value })
    }
}

/// Decodes `\\`, `\"` and `\n` in a validated label value.
fn unescape_label_value(raw: &str) -> String {
    let mut decoded = String::with_capacity(raw.len());
    let mut characters = raw.chars();
    while let Some(character) = characters.next() {
        if character == '\\' {
            match characters.next() {
                Some('n') => decoded.push('\n'),
                Some(other) => decoded.push(other),
                None => decoded.push('\\'),
            }
        } else {
            decoded.push(character);
        }
    }
    decoded
}

/// A malformed exposition: the 1-based line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    pub line: usize,
    pub kind: ParseErrorKind,
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseErrorKind {
    #[error("invalid metric name")]
    InvalidMetricName,
    #[error("{0} line without a metric name")]
    MissingCommentMetricName(&'static str),
    #[error("TYPE line without a type")]
    MissingType,
    #[error("unknown metric type {0:?} (expected counter, gauge, summary, histogram or untyped)")]
    UnknownType(String),
    #[error("unexpected text after the type in a TYPE line")]
    TrailingTextAfterType,
    #[error("invalid escape sequence in a HELP docstring (only \\\\ and \\n are allowed)")]
    InvalidHelpEscape,
    #[error("invalid label name")]
    InvalidLabelName,
    #[error("expected '=' after a label name")]
    ExpectedEquals,
    #[error("expected '\"' to start a label value")]
    ExpectedQuote,
    #[error("invalid escape sequence in a label value (only \\\\, \\\" and \\n are allowed)")]
    InvalidLabelEscape,
    #[error("unterminated label value")]
    UnterminatedLabelValue,
    #[error("expected ',' or '}}' after a label value")]
    ExpectedCommaOrBrace,
    #[error("sample without a value")]
    MissingValue,
    #[error("invalid sample value {0:?}")]
    InvalidValue(String),
    #[error("invalid timestamp {0:?} (expected integer milliseconds)")]
    InvalidTimestamp(String),
    #[error("unexpected text after the timestamp")]
    TrailingText,
}

/// Quotes at most this many bytes of a bad token in an error, so that an error about a
/// megabyte-long line stays readable.
const MAX_QUOTED_TOKEN: usize = 64;

fn quoted_token(token: &str) -> String {
    if token.len() <= MAX_QUOTED_TOKEN {
        return token.to_owned();
    }
    let mut end = MAX_QUOTED_TOKEN;
    while !token.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", token.get(..end).unwrap_or(""))
}

/// The family the parser is in: set by `# HELP`/`# TYPE` lines and by samples of untyped
/// families, together with the caller's filter decision for it.
#[derive(Debug, Clone, Copy)]
struct CurrentFamily<'a> {
    name: &'a str,
    family_type: MetricType,
    wanted: bool,
}

/// An iterator over the samples of an exposition, in input order.
///
/// Yields `Err` at the first malformed line and then ends.
pub struct Samples<'a, F> {
    input: &'a str,
    /// Byte offset of the start of the next line.
    position: usize,
    /// Number of the line most recently read (1-based once reading starts).
    line: usize,
    family: Option<CurrentFamily<'a>>,
    filter: F,
    finished: bool,
}

/// The filter that keeps every family.
pub type KeepAll = fn(&str) -> bool;

fn keep_all(_family: &str) -> bool {
    true
}

impl<'a> Samples<'a, KeepAll> {
    /// Iterates over every sample of `input`, validating every line.
    pub fn new(input: &'a str) -> Self {
        Self::filtered(input, keep_all)
    }
}

impl<'a, F: FnMut(&str) -> bool> Samples<'a, F> {
    /// Iterates over the samples of the families for which `filter(family_name)` is true.
    ///
    /// The filter is called once each time a new family starts (at its `# HELP` or `# TYPE`
    /// line, or at the first sample of an untyped family). Lines of rejected families are
    /// skipped after reading their metric name, without decoding or validating the rest.
    pub fn filtered(input: &'a str, filter: F) -> Self {
        Self {
            input,
            position: 0,
            line: 0,
            family: None,
            filter,
            finished: false,
        }
    }

    /// Reads the `# HELP` or `# TYPE` line at the start of `rest` (at byte `start` of the
    /// input) when it has the shape exporters write: single spaces, a valid name, and for TYPE
    /// a known type and nothing after it. Returns the line's length with its terminator, an
    /// error in a wanted family's docstring, or `None` for any other line, which then goes
    /// through [`Samples::parse_comment`]; for the lines this reads, that gives the same
    /// result.
    ///
    /// This saves finding the end of every TYPE line before tokenising it, and reads a wanted
    /// family's docstring once, looking for its end and its escapes together.
    fn quick_comment(
        &mut self,
        rest: &[u8],
        start: usize,
    ) -> Option<Result<usize, ParseErrorKind>> {
        let is_help = if rest.starts_with(b"# HELP ") {
            true
        } else if rest.starts_with(b"# TYPE ") {
            false
        } else {
            return None;
        };
        let name_start = 7;
        let known = self.family.filter(|current| {
            rest.get(name_start..)
                .and_then(|after| strip_name_prefix(after, current.name.as_bytes()))
                .is_some_and(|after| after.first() == Some(&b' '))
        });
        let name_end = match known {
            Some(current) => name_start + current.name.len(),
            None => {
                if !rest
                    .get(name_start)
                    .is_some_and(|byte| has_class(*byte, METRIC_START))
                {
                    return None;
                }
                skip_name_bytes(rest, name_start + 1, true)
            }
        };
        if rest.get(name_end) != Some(&b' ') {
            return None;
        }
        let name = match known {
            Some(current) => current.name,
            None => self.input.get(start + name_start..start + name_end)?,
        };
        if is_help {
            let family_type = match self.family {
                Some(current) if current.name == name => current.family_type,
                _ => MetricType::Untyped,
            };
            self.enter_family(name, family_type);
            let docstring = rest.get(name_end..)?;
            if !self.family.is_some_and(|family| family.wanted) {
                return Some(Ok(
                    memchr::memchr(b'\n', docstring).map_or(rest.len(), |end| name_end + end + 1)
                ));
            }
            // The docstring's escapes are checked on the way to its end. A `\r` before the
            // line end is not an escape character, so it needs no special case.
            let mut position = 0;
            loop {
                match docstring
                    .get(position..)
                    .and_then(|text| memchr::memchr2(b'\\', b'\n', text))
                {
                    None => return Some(Ok(rest.len())),
                    Some(offset) => {
                        let found = position + offset;
                        if docstring.get(found) == Some(&b'\n') {
                            return Some(Ok(name_end + found + 1));
                        }
                        match docstring.get(found + 1) {
                            Some(b'\\' | b'n') => position = found + 2,
                            _ => return Some(Err(ParseErrorKind::InvalidHelpEscape)),
                        }
                    }
                }
            }
        }
        let type_start = name_end + 1;
        let type_length = rest
            .get(type_start..)?
            .iter()
            .position(|byte| matches!(byte, b' ' | b'\t' | b'\r' | b'\n'))
            .unwrap_or(rest.len() - type_start);
        let type_end = type_start + type_length;
        let consumed = match rest.get(type_end) {
            None => type_end,
            Some(b'\n') => type_end + 1,
            Some(_) => return None,
        };
        let family_type = rest
            .get(type_start..type_end)
            .and_then(MetricType::from_keyword)?;
        self.enter_family(name, family_type);
        Some(Ok(consumed))
    }

    /// Switches to the family `name` of type `family_type`, asking the filter only when the
    /// name changes.
    fn enter_family(&mut self, name: &'a str, family_type: MetricType) {
        let wanted = match self.family {
            Some(current) if current.name == name => current.wanted,
            _ => (self.filter)(name),
        };
        self.family = Some(CurrentFamily {
            name,
            family_type,
            wanted,
        });
    }

    /// Parses one comment line (`text` starts just after the `#`).
    fn parse_comment(&mut self, text: &'a str) -> Result<(), ParseErrorKind> {
        let bytes = text.as_bytes();
        // Exporters write `# HELP ` and `# TYPE ` with single spaces; other spacings take the
        // tokenising path.
        let (is_help, keyword_end) = if bytes.starts_with(b" HELP ") {
            (true, 5)
        } else if bytes.starts_with(b" TYPE ") {
            (false, 5)
        } else {
            let keyword_start = skip_blanks(bytes, 0);
            let keyword_end = token_end(bytes, keyword_start);
            match bytes.get(keyword_start..keyword_end) {
                Some(b"HELP") => (true, keyword_end),
                Some(b"TYPE") => (false, keyword_end),
                // Any other comment carries no meaning.
                _ => return Ok(()),
            }
        };
        let name_start = skip_blanks(bytes, keyword_end);
        let rest = bytes.get(name_start..).unwrap_or_default();
        if rest.is_empty() {
            return Err(ParseErrorKind::MissingCommentMetricName(keyword_label(
                is_help,
            )));
        }
        // A TYPE line usually names the family its HELP line just started, whose name is
        // already validated: one comparison instead of a scan.
        let known = self
            .family
            .filter(|current| {
                strip_name_prefix(rest, current.name.as_bytes())
                    .is_some_and(|after| after.first().is_none_or(|byte| is_blank(*byte)))
            })
            .map(|current| current.name);
        let (name, name_end) = match known {
            Some(name) => (name, name_start + name.len()),
            None => {
                let length = metric_name_end(rest);
                // The name token runs to the next blank; all of it must be a metric name.
                if length == 0 || rest.get(length).is_some_and(|byte| !is_blank(*byte)) {
                    return Err(ParseErrorKind::InvalidMetricName);
                }
                let name_end = name_start + length;
                (text.get(name_start..name_end).unwrap_or_default(), name_end)
            }
        };
        if is_help {
            // A HELP line names the family that follows; it keeps the type when the TYPE line
            // came first, and is untyped until a TYPE line says otherwise.
            let family_type = match self.family {
                Some(current) if current.name == name => current.family_type,
                _ => MetricType::Untyped,
            };
            self.enter_family(name, family_type);
            // The docstring is long and never used, so it is only checked for wanted families.
            if self.family.is_some_and(|family| family.wanted) {
                validate_help_text(text.get(name_end..).unwrap_or_default())?;
            }
            return Ok(());
        }
        let type_start = skip_blanks(bytes, name_end);
        let type_end = token_end(bytes, type_start);
        let keyword = &text[type_start..type_end];
        if keyword.is_empty() {
            return Err(ParseErrorKind::MissingType);
        }
        let family_type = MetricType::from_keyword(keyword.as_bytes())
            .ok_or_else(|| ParseErrorKind::UnknownType(quoted_token(keyword)))?;
        if skip_blanks(bytes, type_end) != bytes.len() {
            return Err(ParseErrorKind::TrailingTextAfterType);
        }
        self.enter_family(name, family_type);
        Ok(())
    }

    /// Works out which family the sample `name` belongs to. Returns the family's name and type,
    /// the sample's suffix and whether the caller wants the family.
    fn resolve_family(&mut self, name: &'a str) -> (&'a str, MetricType, Suffix, bool) {
        if let Some(current) = self.family {
            if name == current.name {
                return (
                    current.name,
                    current.family_type,
                    Suffix::None,
                    current.wanted,
                );
            }
            if let Some(suffix) = name
                .strip_prefix(current.name)
                .and_then(|rest| suffix_of(current.family_type, rest))
            {
                return (current.name, current.family_type, suffix, current.wanted);
            }
        }
        // A sample that matches no declared family is an untyped family of its own.
        self.enter_family(name, MetricType::Untyped);
        let wanted = self.family.is_some_and(|family| family.wanted);
        (name, MetricType::Untyped, Suffix::None, wanted)
    }

    /// Parses one sample line, or returns `None` when its family is not wanted.
    fn parse_sample(&mut self, text: &'a str) -> Result<Option<Sample<'a>>, ParseErrorKind> {
        let bytes = text.as_bytes();
        // Most samples belong to the family of the lines before them: a comparison with its
        // name replaces scanning the sample's.
        let current = self.family.and_then(|current| {
            family_sample_name(bytes, current).map(|(length, suffix)| (current, length, suffix))
        });
        let (name_end, family, family_type, suffix, wanted) = match current {
            Some((current, length, suffix)) => (
                length,
                current.name,
                current.family_type,
                suffix,
                current.wanted,
            ),
            None => {
                let name_end = metric_name_end(bytes);
                if name_end == 0 {
                    return Err(ParseErrorKind::InvalidMetricName);
                }
                match bytes.get(name_end) {
                    None | Some(b' ' | b'\t' | b'{') => {}
                    Some(_) => return Err(ParseErrorKind::InvalidMetricName),
                }
                let (family, family_type, suffix, wanted) =
                    self.resolve_family(text.get(..name_end).unwrap_or_default());
                (name_end, family, family_type, suffix, wanted)
            }
        };
        let name = text.get(..name_end).unwrap_or_default();
        if !wanted {
            return Ok(None);
        }

        let mut position = skip_blanks(bytes, name_end);
        let mut raw_labels = "";
        if bytes.get(position) == Some(&b'{') {
            let labels_start = position + 1;
            let labels_end = scan_label_block(bytes, labels_start)?;
            raw_labels = &text[labels_start..labels_end];
            // Skip the closing brace.
            position = skip_blanks(bytes, labels_end + 1);
        }

        let value_end = token_end(bytes, position);
        let value_text = &text[position..value_end];
        if value_text.is_empty() {
            return Err(ParseErrorKind::MissingValue);
        }
        let value = parse_value(value_text)
            .ok_or_else(|| ParseErrorKind::InvalidValue(quoted_token(value_text)))?;

        let timestamp_start = skip_blanks(bytes, value_end);
        let timestamp_end = token_end(bytes, timestamp_start);
        let timestamp_ms = if timestamp_start == timestamp_end {
            None
        } else {
            let timestamp_text = &text[timestamp_start..timestamp_end];
            Some(
                timestamp_text
                    .parse::<i64>()
                    .map_err(|_| ParseErrorKind::InvalidTimestamp(quoted_token(timestamp_text)))?,
            )
        };
        if skip_blanks(bytes, timestamp_end) != bytes.len() {
            return Err(ParseErrorKind::TrailingText);
        }

        Ok(Some(Sample {
            family,
            family_type,
            name,
            suffix,
            raw_labels,
            value,
            timestamp_ms,
            line: self.line,
        }))
    }
}

/// The length and suffix of the metric name at the start of `line` when it is `family`'s
/// name or its name with one of its type's suffixes, followed by the end of the name (a blank,
/// a `{` or the end of the line). The full parser attributes exactly these lines to the
/// family, so the name needs no further validation.
fn family_sample_name(line: &[u8], family: CurrentFamily<'_>) -> Option<(usize, Suffix)> {
    let after_name = strip_name_prefix(line, family.name.as_bytes())?;
    let (after_name, suffix) = match after_name.first() {
        Some(b'_') => strip_suffix_of(family.family_type, after_name)?,
        _ => (after_name, Suffix::None),
    };
    match after_name.first() {
        None | Some(b' ' | b'\t' | b'{' | b'\n') => Some((line.len() - after_name.len(), suffix)),
        Some(_) => None,
    }
}

/// A sample line parsed by [`quick_sample`].
struct QuickSample {
    /// The range of the label text between the braces, relative to the line start.
    labels: Option<(usize, usize)>,
    value: f64,
    /// The length of the line, terminator included.
    consumed: usize,
}

/// Parses the sample line at the start of `rest`, whose metric name ends at `name_end`, when it
/// has the shape exporters write: `name{label="value",...} value` with no blanks but the one
/// before the value, no escapes, no timestamp, ending in `\n` or the end of the input.
///
/// This is the fast path of every wanted sample: the line is read once, without first finding
/// its end. Any other shape returns `None`, and the line goes through the general parser,
/// which accepts the rest of the grammar and reports errors; for the lines this accepts, the
/// general parser gives the same sample.
fn quick_sample(rest: &[u8], name_end: usize) -> Option<QuickSample> {
    let mut position = name_end;
    let mut labels = None;
    if rest.get(position) == Some(&b'{') {
        let labels_start = position + 1;
        position = labels_start;
        while rest.get(position) != Some(&b'}') {
            if !rest
                .get(position)
                .is_some_and(|byte| has_class(*byte, LABEL_START))
            {
                return None;
            }
            position = skip_name_bytes(rest, position + 1, false);
            if rest.get(position..position + 2) != Some(b"=\"") {
                return None;
            }
            position += 2;
            // Escapes, and a line end inside a value, are the general parser's business.
            let value_length = find_any_of(rest.get(position..)?, [b'"', b'\\', b'\n'])?;
            position += value_length;
            if rest.get(position) != Some(&b'"') {
                return None;
            }
            position += 1;
            match rest.get(position) {
                Some(b',') => position += 1,
                Some(b'}') => {}
                _ => return None,
            }
        }
        labels = Some((labels_start, position));
        position += 1;
    }
    if rest.get(position) != Some(&b' ') {
        return None;
    }
    let value_start = position + 1;
    let value_length = rest
        .get(value_start..)?
        .iter()
        .position(|byte| matches!(byte, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(rest.len() - value_start);
    let value_end = value_start + value_length;
    let consumed = match rest.get(value_end) {
        None => value_end,
        Some(b'\n') => value_end + 1,
        // A timestamp, trailing blanks or a CRLF line end.
        Some(_) => return None,
    };
    let value = parse_value_bytes(rest.get(value_start..value_end)?)?;
    Some(QuickSample {
        labels,
        value,
        consumed,
    })
}

impl<'a, F: FnMut(&str) -> bool> Iterator for Samples<'a, F> {
    type Item = Result<Sample<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let input = self.input;
        let bytes = input.as_bytes();
        while let Some(rest) = bytes.get(self.position..).filter(|rest| !rest.is_empty()) {
            self.line += 1;
            let start = self.position;
            if rest.first() == Some(&b'#') {
                match self.quick_comment(rest, start) {
                    Some(Ok(consumed)) => {
                        self.position += consumed;
                        continue;
                    }
                    Some(Err(kind)) => {
                        self.finished = true;
                        return Some(Err(ParseError {
                            line: self.line,
                            kind,
                        }));
                    }
                    None => {}
                }
            }
            // Most lines are samples of the family the lines before them started: they are
            // skipped or parsed without first finding their end.
            if rest.first() != Some(&b'#')
                && let Some(family) = self.family
                && let Some((name_end, suffix)) = family_sample_name(rest, family)
            {
                if !family.wanted {
                    self.position += memchr::memchr(b'\n', rest).map_or(rest.len(), |end| end + 1);
                    continue;
                }
                if let Some(quick) = quick_sample(rest, name_end) {
                    self.position += quick.consumed;
                    let raw_labels = quick
                        .labels
                        .and_then(|(labels_start, labels_end)| {
                            input.get(start + labels_start..start + labels_end)
                        })
                        .unwrap_or_default();
                    return Some(Ok(Sample {
                        family: family.name,
                        family_type: family.family_type,
                        name: input.get(start..start + name_end).unwrap_or_default(),
                        suffix,
                        raw_labels,
                        value: quick.value,
                        timestamp_ms: None,
                        line: self.line,
                    }));
                }
            }
            // The line without its terminator (`\n` or `\r\n`).
            let (mut end, next) = match memchr::memchr(b'\n', rest) {
                Some(offset) => (start + offset, start + offset + 1),
                None => (bytes.len(), bytes.len()),
            };
            self.position = next;
            if end > start && bytes.get(end - 1) == Some(&b'\r') {
                end -= 1;
            }
            let line_bytes = bytes.get(start..end).unwrap_or_default();
            let blanks = skip_blanks(line_bytes, 0);
            // Line ends and blanks are ASCII, so these are character boundaries.
            let text = input.get(start + blanks..end).unwrap_or_default();
            let outcome = match text.as_bytes().first() {
                None => Ok(None),
                Some(b'#') => self
                    .parse_comment(text.get(1..).unwrap_or_default())
                    .map(|()| None),
                Some(_) => self.parse_sample(text),
            };
            match outcome {
                Ok(None) => {}
                Ok(Some(sample)) => return Some(Ok(sample)),
                Err(kind) => {
                    self.finished = true;
                    return Some(Err(ParseError {
                        line: self.line,
                        kind,
                    }));
                }
            }
        }
        self.finished = true;
        None
    }
}

impl<F: FnMut(&str) -> bool> std::iter::FusedIterator for Samples<'_, F> {}

/// Checks a whole exposition, returning the number of samples in it.
pub fn validate(input: &str) -> Result<usize, ParseError> {
    let mut count = 0;
    for sample in Samples::new(input) {
        sample?;
        count += 1;
    }
    Ok(count)
}

fn keyword_label(is_help: bool) -> &'static str {
    if is_help { "HELP" } else { "TYPE" }
}

/// The suffix `rest` (what follows the family name) denotes in a family of `family_type`, if
/// any: only summaries and histograms have suffixed samples.
fn suffix_of(family_type: MetricType, rest: &str) -> Option<Suffix> {
    match (family_type, rest) {
        (MetricType::Summary | MetricType::Histogram, "_sum") => Some(Suffix::Sum),
        (MetricType::Summary | MetricType::Histogram, "_count") => Some(Suffix::Count),
        (MetricType::Histogram, "_bucket") => Some(Suffix::Bucket),
        _ => None,
    }
}

/// What follows a suffixed sample's suffix and which suffix it is, when `after_name` (the text
/// after the family name, starting with `_`) starts with a suffix the family's type has.
fn strip_suffix_of(family_type: MetricType, after_name: &[u8]) -> Option<(&[u8], Suffix)> {
    let suffixed = |suffix: &[u8], kind: Suffix| {
        after_name
            .strip_prefix(suffix)
            .map(|after_suffix| (after_suffix, kind))
    };
    match family_type {
        MetricType::Summary => {
            suffixed(b"_sum", Suffix::Sum).or_else(|| suffixed(b"_count", Suffix::Count))
        }
        MetricType::Histogram => suffixed(b"_bucket", Suffix::Bucket)
            .or_else(|| suffixed(b"_sum", Suffix::Sum))
            .or_else(|| suffixed(b"_count", Suffix::Count)),
        MetricType::Counter | MetricType::Gauge | MetricType::Untyped => None,
    }
}

/// `bytes` without the prefix `name`, if it starts with it.
///
/// Compares eight bytes at a time inline: this runs once or twice per line, on names of 20 to
/// 50 bytes, where calling `memcmp` costs more than the comparison.
fn strip_name_prefix<'b>(bytes: &'b [u8], name: &[u8]) -> Option<&'b [u8]> {
    let (head, tail) = bytes.split_at_checked(name.len())?;
    let word = |text: &[u8], at: usize| {
        text.get(at..at + 8)
            .and_then(|chunk| chunk.first_chunk::<8>())
            .map(|chunk| u64::from_ne_bytes(*chunk))
    };
    if name.len() < 8 {
        return (head == name).then_some(tail);
    }
    let mut at = 0;
    while at + 8 < name.len() {
        if word(head, at) != word(name, at) {
            return None;
        }
        at += 8;
    }
    // The last eight bytes, overlapping the previous word when the length is not a multiple
    // of eight.
    let last = name.len() - 8;
    (word(head, last) == word(name, last)).then_some(tail)
}

/// Byte classes for the name scanners, one table lookup per byte instead of a chain of
/// comparisons.
const METRIC_START: u8 = 1;
const METRIC: u8 = 2;
const LABEL_START: u8 = 4;
const LABEL: u8 = 8;
const BLANK: u8 = 16;

const BYTE_CLASSES: [u8; 256] = {
    let mut table = [0_u8; 256];
    let mut index = 0;
    while index < table.len() {
        // `index` is below 256.
        #[allow(clippy::cast_possible_truncation)]
        let byte = index as u8;
        let mut class = 0;
        if byte.is_ascii_alphabetic() || byte == b'_' {
            class |= METRIC_START | METRIC | LABEL_START | LABEL;
        }
        if byte == b':' {
            class |= METRIC_START | METRIC;
        }
        if byte.is_ascii_digit() {
            class |= METRIC | LABEL;
        }
        if byte == b' ' || byte == b'\t' {
            class |= BLANK;
        }
        table[index] = class;
        index += 1;
    }
    table
};

fn is_blank(byte: u8) -> bool {
    has_class(byte, BLANK)
}

fn has_class(byte: u8, class: u8) -> bool {
    BYTE_CLASSES[usize::from(byte)] & class != 0
}

/// The index of the first byte at or after `position` that cannot be in a metric name (or,
/// without `colon`, in a label name).
///
/// Every family's HELP line and every label needs a name scanned, so this checks eight bytes
/// per step with word arithmetic instead of a branch per byte.
fn skip_name_bytes(bytes: &[u8], position: usize, colon: bool) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // With the high bits cleared, adding a per-byte constant never carries into the next
    // byte, so each byte's high bit of the sum tells whether that byte reached a bound.
    let in_range = |low: u64, first: u8, last: u8| {
        low.wrapping_add(ONES * u64::from(0x80 - first))
            & !low.wrapping_add(ONES * u64::from(0x7f - last))
            & HIGHS
    };
    let Some(rest) = bytes.get(position..) else {
        return bytes.len();
    };
    let mut chunks = rest.chunks_exact(8);
    let mut offset = position;
    for chunk in &mut chunks {
        let word = chunk
            .first_chunk::<8>()
            .map_or(0, |chunk| u64::from_le_bytes(*chunk));
        let low = word & !HIGHS;
        let mut name_bytes = in_range(low | (ONES * 0x20), b'a', b'z')
            | in_range(low, b'0', b'9')
            | in_range(low, b'_', b'_');
        if colon {
            name_bytes |= in_range(low, b':', b':');
        }
        // Bytes with the high bit set (non-ASCII) are never name bytes.
        let outside = (!name_bytes | word) & HIGHS;
        if outside != 0 {
            return offset + (outside.trailing_zeros() / 8) as usize;
        }
        offset += 8;
    }
    let class = if colon { METRIC } else { LABEL };
    let remainder = chunks.remainder();
    offset
        + remainder
            .iter()
            .position(|byte| !has_class(*byte, class))
            .unwrap_or(remainder.len())
}

/// The index of the first non-blank byte at or after `position`.
fn skip_blanks(bytes: &[u8], position: usize) -> usize {
    // Usually there is exactly one blank or none, so a plain loop is best here.
    match bytes.get(position..) {
        Some(rest) => {
            position
                + rest
                    .iter()
                    .position(|byte| !is_blank(*byte))
                    .unwrap_or(rest.len())
        }
        None => bytes.len(),
    }
}

/// The index of the first blank byte (or the end) at or after `position`.
fn token_end(bytes: &[u8], position: usize) -> usize {
    match bytes.get(position..) {
        Some(rest) => {
            position
                + rest
                    .iter()
                    .position(|byte| has_class(*byte, BLANK))
                    .unwrap_or(rest.len())
        }
        None => bytes.len(),
    }
}

/// The length of the metric name at the start of `bytes` (0 when there is none).
fn metric_name_end(bytes: &[u8]) -> usize {
    match bytes.first() {
        Some(first) if has_class(*first, METRIC_START) => skip_name_bytes(bytes, 1, true),
        _ => 0,
    }
}

/// Checks the escape sequences of a HELP docstring.
fn validate_help_text(text: &str) -> Result<(), ParseErrorKind> {
    let bytes = text.as_bytes();
    let mut position = 0;
    // A vectorised search, because docstrings are half of an exposition's bytes.
    while let Some(offset) = bytes
        .get(position..)
        .and_then(|rest| memchr::memchr(b'\\', rest))
    {
        let escape = position + offset;
        match bytes.get(escape + 1) {
            Some(b'\\' | b'n') => position = escape + 2,
            _ => return Err(ParseErrorKind::InvalidHelpEscape),
        }
    }
    Ok(())
}

/// The index of the first `"` or `\\` in `bytes`: the end of a label value or an escape.
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    find_any_of(bytes, [b'"', b'\\', b'"'])
}

/// The index of the first byte of `bytes` that is one of `targets`.
///
/// Looks at eight bytes per step with word arithmetic: label values and sample values are 1
/// to 30 bytes long, too short for a vectorised search to pay for its setup and long enough
/// for a byte-at-a-time loop to be the parser's hottest code.
fn find_any_of(bytes: &[u8], targets: [u8; 3]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of the result is set where `word` has a zero byte (and
    // possibly above it, never below, so the lowest set bit is exact).
    let zero_bytes = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let [first, second, third] = targets.map(|target| u64::from(target) * ONES);
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = chunk
            .first_chunk::<8>()
            .map_or(0, |chunk| u64::from_le_bytes(*chunk));
        let found = zero_bytes(word ^ first) | zero_bytes(word ^ second) | zero_bytes(word ^ third);
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|byte| targets.contains(byte))
        .map(|index| offset + index)
}

/// Validates the label block starting at `start` (just after `{`) and returns the index of its
/// closing `}`.
fn scan_label_block(bytes: &[u8], start: usize) -> Result<usize, ParseErrorKind> {
    let mut position = start;
    loop {
        position = skip_blanks(bytes, position);
        match bytes.get(position) {
            Some(b'}') => return Ok(position),
            Some(byte) if has_class(*byte, LABEL_START) => {}
            _ => return Err(ParseErrorKind::InvalidLabelName),
        }
        position = skip_name_bytes(bytes, position + 1, false);
        position = skip_blanks(bytes, position);
        if bytes.get(position) != Some(&b'=') {
            return Err(ParseErrorKind::ExpectedEquals);
        }
        position = skip_blanks(bytes, position + 1);
        if bytes.get(position) != Some(&b'"') {
            return Err(ParseErrorKind::ExpectedQuote);
        }
        position += 1;
        loop {
            let offset = bytes
                .get(position..)
                .and_then(quote_or_backslash)
                .ok_or(ParseErrorKind::UnterminatedLabelValue)?;
            position += offset;
            if bytes.get(position) == Some(&b'"') {
                break;
            }
            match bytes.get(position + 1) {
                Some(b'\\' | b'"' | b'n') => position += 2,
                Some(_) => return Err(ParseErrorKind::InvalidLabelEscape),
                None => return Err(ParseErrorKind::UnterminatedLabelValue),
            }
        }
        // Skip the closing quote.
        position = skip_blanks(bytes, position + 1);
        match bytes.get(position) {
            Some(b',') => position += 1,
            Some(b'}') => return Ok(position),
            _ => return Err(ParseErrorKind::ExpectedCommaOrBrace),
        }
    }
}

/// Mantissas up to 2^53 are exact in an `f64`.
const MAX_EXACT_MANTISSA: u64 = 1 << 53;

/// The powers of ten an `f64` holds exactly.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Parses the decimal numbers whose correctly rounded value one multiplication or division
/// gives (Clinger's fast path): a mantissa of at most 2^53 and a decimal exponent within
/// +-22, both of which are exact in an `f64`, so the one rounding of the operation is the
/// correct rounding. That is every value ipamd and Go's client write in practice
/// (`42`, `2.088`, `2.5155e-05`, `1.430257664e+09`); anything else returns `None`.
fn parse_simple_decimal(bytes: &[u8]) -> Option<f64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, bytes),
    };
    // Up to 19 digits fit a u64 without overflow checks; longer mantissas are rare and go to
    // the standard parser.
    let mut mantissa = 0_u64;
    let mut position = 0;
    while let Some(digit) = digits.get(position).filter(|byte| byte.is_ascii_digit()) {
        mantissa = mantissa
            .wrapping_mul(10)
            .wrapping_add(u64::from(digit - b'0'));
        position += 1;
    }
    let integer_digits = position;
    let mut fraction_digits = 0_i32;
    if digits.get(position) == Some(&b'.') {
        position += 1;
        let fraction_start = position;
        while let Some(digit) = digits.get(position).filter(|byte| byte.is_ascii_digit()) {
            mantissa = mantissa
                .wrapping_mul(10)
                .wrapping_add(u64::from(digit - b'0'));
            position += 1;
        }
        fraction_digits = i32::try_from(position - fraction_start).ok()?;
    }
    if integer_digits + usize::try_from(fraction_digits).ok()? > 19 {
        return None;
    }
    if integer_digits == 0 && fraction_digits == 0 {
        return None;
    }
    let mut exponent = 0_i32;
    if let Some(b'e' | b'E') = digits.get(position) {
        position += 1;
        let exponent_negative = match digits.get(position) {
            Some(b'-') => {
                position += 1;
                true
            }
            Some(b'+') => {
                position += 1;
                false
            }
            _ => false,
        };
        let exponent_start = position;
        while let Some(digit) = digits.get(position).filter(|byte| byte.is_ascii_digit()) {
            // Exponents this large are out of the fast path's range anyway.
            if position - exponent_start >= 4 {
                return None;
            }
            exponent = exponent * 10 + i32::from(digit - b'0');
            position += 1;
        }
        if position == exponent_start {
            return None;
        }
        if exponent_negative {
            exponent = -exponent;
        }
    }
    if position != digits.len() || mantissa > MAX_EXACT_MANTISSA {
        return None;
    }
    let exponent = exponent - fraction_digits;
    let power = EXACT_POWERS_OF_TEN.get(usize::try_from(exponent.unsigned_abs()).ok()?)?;
    // Exact: the mantissa is at most 2^53.
    #[allow(clippy::cast_precision_loss)]
    let mantissa = mantissa as f64;
    let magnitude = if exponent < 0 {
        mantissa / power
    } else {
        mantissa * power
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// Parses a sample value: a decimal float, `NaN`, `+Inf` or `-Inf`.
///
/// Nearly every value takes the exact fast path of [`parse_simple_decimal`]; everything else
/// goes to the standard library's correctly rounded parser.
fn parse_value(text: &str) -> Option<f64> {
    parse_value_bytes(text.as_bytes())
}

/// [`parse_value`] on bytes, so that the fast path needs no UTF-8 check for the usual value.
fn parse_value_bytes(bytes: &[u8]) -> Option<f64> {
    if let Some(value) = parse_simple_decimal(bytes) {
        return Some(value);
    }
    let text = std::str::from_utf8(bytes).ok()?;
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => {
            // Rust also accepts spellings such as "infinity" and "nan"; Go's ParseFloat, which
            // produces this format, accepts them too, so they are not worth rejecting.
            text.parse::<f64>().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_integer_path_matches_the_standard_parser() {
        for text in ["0", "7", "42", "999999999999999", "0000012"] {
            assert_eq!(parse_value(text), text.parse::<f64>().ok(), "{text}");
        }
        assert_eq!(parse_value("1e3"), Some(1000.0));
        assert_eq!(parse_value("-0.5"), Some(-0.5));
        assert_eq!(
            parse_value("1234567890123456789"),
            Some(1.234_567_890_123_456_8e18)
        );
        assert!(parse_value("NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_value(""), None);
        assert_eq!(parse_value("1,5"), None);
    }

    #[test]
    fn simple_decimals_parse_exactly_as_the_standard_parser_does() {
        let tricky = [
            "0",
            "-0",
            "+0",
            ".5",
            "5.",
            "-.5e3",
            "5.e3",
            "+.5",
            "0.1",
            "0.3",
            "2.088",
            "2.5155e-05",
            "1.0255593e+07",
            "1.8446744073709552e+19",
            "9007199254740992",
            "9007199254740993",
            "123456789012345678",
            "1e22",
            "1e23",
            "1e-22",
            "1e-23",
            "4.4617728e+07",
            "1.430257664e+09",
            "0.014214798",
            "1E5",
            "1e+0",
            "1e-0",
            "00000000000000000000001",
            "1e",
            "e5",
            ".",
            "-",
            "+",
            "1.2.3",
            "1e5e5",
            "--1",
            "1e99999",
            "0.000000000000000000000000001",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut generated = Vec::new();
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mantissa = seed % 100_000_000_000;
            let scale = (seed >> 40) % 12;
            let exponent = i64::try_from((seed >> 48) % 50).expect("small") - 25;
            let digits = mantissa.to_string();
            let split = digits
                .len()
                .saturating_sub(usize::try_from(scale).expect("small"));
            generated.push(format!(
                "{}.{}e{exponent}",
                &digits[..split],
                &digits[split..]
            ));
            generated.push(format!("{mantissa}e{exponent}"));
        }
        for text in tricky
            .iter()
            .copied()
            .chain(generated.iter().map(String::as_str))
        {
            let ours = parse_value(text).map(f64::to_bits);
            let standard = text.parse::<f64>().ok().map(f64::to_bits);
            assert_eq!(ours, standard, "{text}");
        }
    }

    #[test]
    fn quoted_tokens_are_cut_on_a_character_boundary() {
        let long = "é".repeat(100);
        let quoted = quoted_token(&long);
        assert!(quoted.ends_with("..."));
        assert!(quoted.len() <= MAX_QUOTED_TOKEN + 3);
    }

    #[test]
    fn unescape_handles_every_escape() {
        assert_eq!(unescape_label_value(r#"a\\b\"c\nd"#), "a\\b\"c\nd");
    }
}
