//! A deliberately tiny reader for the embedded comma-separated tables: `#` starts a comment
//! line, the first other line is the header, no quoting (no value in our tables needs it).

use super::DataError;

/// One data row with its 1-based line number, for error messages.
pub struct Row<'a> {
    pub line: usize,
    pub fields: Vec<&'a str>,
}

/// Splits `text` into rows after checking that the header is exactly `header`.
pub fn rows<'a>(
    file: &'static str,
    text: &'a str,
    header: &[&str],
) -> Result<Vec<Row<'a>>, DataError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'));
    let error = |line: usize, problem: String| DataError {
        file,
        line,
        problem,
    };
    let (header_line, found) = lines
        .next()
        .ok_or_else(|| error(0, "the table has no header line".to_owned()))?;
    let found: Vec<&str> = found.split(',').collect();
    if found != header {
        return Err(error(
            header_line,
            format!(
                "expected the header {:?}, found {found:?}",
                header.join(",")
            ),
        ));
    }
    lines
        .map(|(line, text)| {
            let fields: Vec<&str> = text.split(',').map(str::trim).collect();
            if fields.len() != header.len() {
                return Err(error(
                    line,
                    format!("expected {} fields, found {}", header.len(), fields.len()),
                ));
            }
            if let Some(position) = fields.iter().position(|field| field.is_empty()) {
                return Err(error(
                    line,
                    format!("the field {} is empty", header[position]),
                ));
            }
            Ok(Row { line, fields })
        })
        .collect()
}
