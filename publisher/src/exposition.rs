//! A parser for the Prometheus text exposition format, version 0.0.4, written for the job of
//! reading ipamd's `/metrics` endpoint.
//!
//! What it does and why:
//!
//! - It is zero-copy. A [`Sample`] borrows its family name, its metric name and its raw label
//!   text from the input; label values are only decoded when the caller asks for them
//!   ([`Sample::labels`]), and only a value that contains an escape sequence (`\\`, `\"`, `\n`)
//!   is copied into an owned string.
//! - It lets the caller skip whole families without paying for them. [`Samples::filtered`]
//!   takes a filter over family names that is called once per family; the sample lines of a
//!   rejected family are attributed to their family by their metric name and then skipped to the
//!   end of the line. On a real aws-node endpoint the `go_*` and `process_*` families are most of
//!   the bytes, and none of them are needed.
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

    fn from_keyword(keyword: &str) -> Option<Self> {
        match keyword {
            "counter" => Some(Self::Counter),
            "gauge" => Some(Self::Gauge),
            "summary" => Some(Self::Summary),
            "histogram" => Some(Self::Histogram),
            "untyped" => Some(Self::Untyped),
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
        let mut position = skip_blanks(bytes, 0);
        if bytes.get(position) == Some(&b',') {
            position = skip_blanks(bytes, position + 1);
        }
        let name_start = position;
        while bytes
            .get(position)
            .is_some_and(|byte| is_label_name_byte(*byte))
        {
            position += 1;
        }
        if position == name_start {
            self.rest = "";
            return None;
        }
        let name = text.get(name_start..position)?;
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
        let value_start = position + 1;
        let mut cursor = value_start;
        let mut escaped = false;
        loop {
            match bytes.get(cursor) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    cursor += 2;
                }
                Some(_) => cursor += 1,
                None => {
                    self.rest = "";
                    return None;
                }
            }
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
        let keyword_start = skip_blanks(bytes, 0);
        let keyword_end = token_end(bytes, keyword_start);
        let keyword = &text[keyword_start..keyword_end];
        let is_help = keyword == "HELP";
        if !is_help && keyword != "TYPE" {
            // Any other comment carries no meaning.
            return Ok(());
        }
        let name_start = skip_blanks(bytes, keyword_end);
        let name_end = token_end(bytes, name_start);
        let name = &text[name_start..name_end];
        if name.is_empty() {
            return Err(ParseErrorKind::MissingCommentMetricName(keyword_label(
                is_help,
            )));
        }
        if !is_metric_name(name) {
            return Err(ParseErrorKind::InvalidMetricName);
        }
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
                validate_help_text(&text[name_end..])?;
            }
            return Ok(());
        }
        let type_start = skip_blanks(bytes, name_end);
        let type_end = token_end(bytes, type_start);
        let keyword = &text[type_start..type_end];
        if keyword.is_empty() {
            return Err(ParseErrorKind::MissingType);
        }
        let family_type = MetricType::from_keyword(keyword)
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
        let name_end = metric_name_end(bytes);
        if name_end == 0 {
            return Err(ParseErrorKind::InvalidMetricName);
        }
        match bytes.get(name_end) {
            None | Some(b' ' | b'\t' | b'{') => {}
            Some(_) => return Err(ParseErrorKind::InvalidMetricName),
        }
        let name = &text[..name_end];
        let (family, family_type, suffix, wanted) = self.resolve_family(name);
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

    /// Takes the next line off the input, without its line terminator (`\n` or `\r\n`).
    fn next_line(&mut self) -> Option<&'a str> {
        let rest = self.input.get(self.position..)?;
        if rest.is_empty() {
            return None;
        }
        self.line += 1;
        let (line, consumed) = match rest.find('\n') {
            Some(end) => (&rest[..end], end + 1),
            None => (rest, rest.len()),
        };
        self.position += consumed;
        Some(line.strip_suffix('\r').unwrap_or(line))
    }
}

impl<'a, F: FnMut(&str) -> bool> Iterator for Samples<'a, F> {
    type Item = Result<Sample<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        while let Some(line) = self.next_line() {
            let start = skip_blanks(line.as_bytes(), 0);
            let text = &line[start..];
            let outcome = match text.as_bytes().first() {
                None => Ok(None),
                Some(b'#') => self.parse_comment(&text[1..]).map(|()| None),
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

fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// The index of the first non-blank byte at or after `position`.
fn skip_blanks(bytes: &[u8], mut position: usize) -> usize {
    while bytes.get(position).copied().is_some_and(is_blank) {
        position += 1;
    }
    position.min(bytes.len())
}

/// The index of the first blank byte (or the end) at or after `position`.
fn token_end(bytes: &[u8], mut position: usize) -> usize {
    while bytes.get(position).is_some_and(|byte| !is_blank(*byte)) {
        position += 1;
    }
    position.min(bytes.len())
}

fn is_metric_name_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_' || byte == b':'
}

fn is_metric_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b':'
}

fn is_label_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The length of the metric name at the start of `bytes` (0 when there is none).
fn metric_name_end(bytes: &[u8]) -> usize {
    match bytes.first() {
        Some(first) if is_metric_name_start(*first) => {}
        _ => return 0,
    }
    bytes
        .iter()
        .position(|byte| !is_metric_name_byte(*byte))
        .unwrap_or(bytes.len())
}

fn is_metric_name(name: &str) -> bool {
    !name.is_empty() && metric_name_end(name.as_bytes()) == name.len()
}

/// Checks the escape sequences of a HELP docstring.
fn validate_help_text(text: &str) -> Result<(), ParseErrorKind> {
    let bytes = text.as_bytes();
    let mut position = 0;
    // `str::find` with a single-byte pattern searches a word at a time, which matters because
    // docstrings are a large share of an exposition's bytes.
    while let Some(offset) = text.get(position..).and_then(|rest| rest.find('\\')) {
        let escape = position + offset;
        match bytes.get(escape + 1) {
            Some(b'\\' | b'n') => position = escape + 2,
            _ => return Err(ParseErrorKind::InvalidHelpEscape),
        }
    }
    Ok(())
}

/// Validates the label block starting at `start` (just after `{`) and returns the index of its
/// closing `}`.
fn scan_label_block(bytes: &[u8], start: usize) -> Result<usize, ParseErrorKind> {
    let mut position = start;
    loop {
        position = skip_blanks(bytes, position);
        match bytes.get(position) {
            Some(b'}') => return Ok(position),
            Some(byte) if is_label_name_byte(*byte) && !byte.is_ascii_digit() => {}
            _ => return Err(ParseErrorKind::InvalidLabelName),
        }
        while bytes
            .get(position)
            .is_some_and(|byte| is_label_name_byte(*byte))
        {
            position += 1;
        }
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
            match bytes.get(position) {
                Some(b'"') => break,
                Some(b'\\') => match bytes.get(position + 1) {
                    Some(b'\\' | b'"' | b'n') => position += 2,
                    Some(_) => return Err(ParseErrorKind::InvalidLabelEscape),
                    None => return Err(ParseErrorKind::UnterminatedLabelValue),
                },
                Some(_) => position += 1,
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

/// The largest number of decimal digits whose value an `f64` holds exactly (2^53 > 10^15).
const MAX_EXACT_DIGITS: usize = 15;

/// Parses a sample value: a decimal float, `NaN`, `+Inf` or `-Inf`.
///
/// Most ipamd values are small non-negative integers, which take a fast path; everything else
/// goes to the standard library's correctly rounded parser.
fn parse_value(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    if !bytes.is_empty() && bytes.len() <= MAX_EXACT_DIGITS && bytes.iter().all(u8::is_ascii_digit)
    {
        let integer = bytes
            .iter()
            .fold(0_u64, |total, digit| total * 10 + u64::from(digit - b'0'));
        // Exact: at most 15 digits, below 2^53.
        #[allow(clippy::cast_precision_loss)]
        return Some(integer as f64);
    }
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
