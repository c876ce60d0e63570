//! Export of rating rows as CSV and JSON Lines, and reading them back.
//!
//! Both formats carry every [`RatingRow`] field under its Rust name. In CSV an absent hashtag is an
//! empty field, so an empty hashtag text reads back as `None` (hashtags are never empty in practice).
//! Fields are written verbatim: a spreadsheet may interpret a rater name starting with `=` as a
//! formula, so open exports in a spreadsheet with care; rewriting the text would break round trips.
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, RatingRow, Result};

/// The CSV header: [`RatingRow`]'s fields in declaration order.
pub const CSV_HEADER: [&str; 10] = [
    "rater_id",
    "rater_name",
    "result_id",
    "post_id",
    "model_version",
    "question",
    "item",
    "hashtag",
    "value",
    "answered_at",
];

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

impl ExportFormat {
    /// File extension without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Jsonl => "jsonl",
        }
    }

    /// HTTP content type of a download.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Jsonl => "application/jsonl; charset=utf-8",
        }
    }
}

impl FromStr for ExportFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Ok(ExportFormat::Csv),
            "jsonl" | "ndjson" => Ok(ExportFormat::Jsonl),
            other => Err(Error::Msg(format!(
                "unknown export format {other:?} (expected csv or jsonl)"
            ))),
        }
    }
}

/// Writes `rows` in `format`; returns the number of rows written.
pub fn write<'a, W: Write>(
    format: ExportFormat,
    rows: impl IntoIterator<Item = &'a RatingRow>,
    out: W,
) -> Result<usize> {
    match format {
        ExportFormat::Csv => write_csv(rows, out),
        ExportFormat::Jsonl => write_jsonl(rows, out),
    }
}

/// Reads rows written in `format`.
pub fn read<R: Read>(format: ExportFormat, input: R) -> Result<Vec<RatingRow>> {
    match format {
        ExportFormat::Csv => read_csv(input),
        ExportFormat::Jsonl => read_jsonl(input),
    }
}

/// Writes a header line and one CSV record per row (RFC 4180 quoting); returns the row count.
/// The header is written even when there are no rows, so an empty export is still self-describing.
pub fn write_csv<'a, W: Write>(
    rows: impl IntoIterator<Item = &'a RatingRow>,
    out: W,
) -> Result<usize> {
    let err = |e: csv::Error| Error::Msg(format!("writing CSV: {e}"));
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(out);
    writer.write_record(CSV_HEADER).map_err(err)?;
    let mut count = 0;
    for row in rows {
        writer.serialize(row).map_err(err)?;
        count += 1;
    }
    writer
        .flush()
        .map_err(|e| Error::Msg(format!("writing CSV: {e}")))?;
    Ok(count)
}

/// Reads CSV written by [`write_csv`]. Columns are matched by header name, so their order may
/// differ and extra columns are ignored; a missing column or a malformed value is an error naming
/// the record.
pub fn read_csv<R: Read>(input: R) -> Result<Vec<RatingRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(input);
    reader
        .deserialize()
        .map(|row| row.map_err(|e| Error::Msg(format!("reading CSV: {e}"))))
        .collect()
}

/// Writes one JSON object per line; returns the row count.
pub fn write_jsonl<'a, W: Write>(
    rows: impl IntoIterator<Item = &'a RatingRow>,
    out: W,
) -> Result<usize> {
    let io = |e: std::io::Error| Error::Msg(format!("writing JSONL: {e}"));
    let mut out = BufWriter::new(out);
    let mut count = 0;
    for row in rows {
        // serde_json escapes newlines inside strings, so one row stays one line.
        serde_json::to_writer(&mut out, row)
            .map_err(|e| Error::Msg(format!("writing JSONL: {e}")))?;
        out.write_all(b"\n").map_err(io)?;
        count += 1;
    }
    out.flush().map_err(io)?;
    Ok(count)
}

/// Reads JSON Lines written by [`write_jsonl`]; blank lines are skipped, and an error names the
/// line.
pub fn read_jsonl<R: Read>(input: R) -> Result<Vec<RatingRow>> {
    let mut rows = Vec::new();
    for (i, line) in BufReader::new(input).lines().enumerate() {
        let line = line.map_err(|e| Error::Msg(format!("reading JSONL line {}: {e}", i + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let row = serde_json::from_str(&line)
            .map_err(|e| Error::Msg(format!("reading JSONL line {}: {e}", i + 1)))?;
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tricky() -> Vec<RatingRow> {
        let base = RatingRow {
            rater_id: 7,
            rater_name: "Zoë \"Z\", Ørsted".into(),
            result_id: 42,
            post_id: 9_000_000_001,
            model_version: "v1,beta".into(),
            question: "q1".into(),
            item: 0,
            hashtag: Some("#café,\"naïve\"\nline two".into()),
            value: 1,
            answered_at: 1_717_171_717_171,
        };
        vec![
            base.clone(),
            RatingRow {
                rater_name: "日本語の評価者\r\n(two lines)".into(),
                item: 3,
                hashtag: Some("#東京 🗼".into()),
                value: 0,
                ..base.clone()
            },
            RatingRow {
                rater_id: -1,
                rater_name: " leading and trailing spaces ".into(),
                question: "q2".into(),
                hashtag: None,
                value: 2,
                answered_at: 0,
                ..base.clone()
            },
            RatingRow {
                rater_name: "=SUM(A1:A9)".into(),
                hashtag: Some("'quoted' \\ back\\slash\ttab".into()),
                ..base
            },
        ]
    }

    #[test]
    fn csv_round_trip() {
        let rows = tricky();
        let mut buf = Vec::new();
        assert_eq!(write_csv(&rows, &mut buf).unwrap(), rows.len());
        let text = String::from_utf8(buf.clone()).unwrap();
        assert_eq!(text.lines().next().unwrap(), CSV_HEADER.join(","));
        assert_eq!(read_csv(buf.as_slice()).unwrap(), rows);
    }

    #[test]
    fn jsonl_round_trip() {
        let rows = tricky();
        let mut buf = Vec::new();
        assert_eq!(write_jsonl(&rows, &mut buf).unwrap(), rows.len());
        let text = String::from_utf8(buf.clone()).unwrap();
        assert_eq!(text.lines().count(), rows.len());
        assert_eq!(read_jsonl(buf.as_slice()).unwrap(), rows);
    }

    #[test]
    fn header_matches_the_row_fields() {
        // Serialising a row straight to JSON lists the fields in declaration order.
        let json = serde_json::to_string(&tricky()[0]).unwrap();
        let mut at = 0;
        for field in CSV_HEADER {
            let pos = json[at..].find(&format!("\"{field}\":"));
            at += pos.unwrap_or_else(|| panic!("{field} missing or out of order in {json}"));
        }
        let value = serde_json::to_value(&tricky()[0]).unwrap();
        assert_eq!(value.as_object().unwrap().len(), CSV_HEADER.len());
    }

    #[test]
    fn empty_exports() {
        let mut csv_buf = Vec::new();
        assert_eq!(write_csv(&[], &mut csv_buf).unwrap(), 0);
        assert_eq!(
            String::from_utf8(csv_buf.clone()).unwrap().trim_end(),
            CSV_HEADER.join(",")
        );
        assert!(read_csv(csv_buf.as_slice()).unwrap().is_empty());
        let mut jsonl_buf = Vec::new();
        assert_eq!(write_jsonl(&[], &mut jsonl_buf).unwrap(), 0);
        assert!(jsonl_buf.is_empty());
        assert!(read_jsonl(&b"\n\n"[..]).unwrap().is_empty());
    }

    #[test]
    fn format_dispatch_and_parsing() {
        let rows = tricky();
        for name in ["csv", "JSONL", "ndjson"] {
            let format: ExportFormat = name.parse().unwrap();
            let mut buf = Vec::new();
            write(format, &rows, &mut buf).unwrap();
            assert_eq!(read(format, buf.as_slice()).unwrap(), rows, "{name}");
        }
        assert!("xml".parse::<ExportFormat>().is_err());
        assert_eq!(ExportFormat::Jsonl.extension(), "jsonl");
        assert!(ExportFormat::Csv.content_type().starts_with("text/csv"));
    }

    #[test]
    fn reading_tolerates_column_order_and_reports_errors() {
        let reordered = "value,question,item,hashtag,rater_id,rater_name,result_id,post_id,model_version,answered_at,extra\n\
                         1,q1,0,#a,1,ann,2,3,v1,4,ignored\n";
        let rows = read_csv(reordered.as_bytes()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].value, rows[0].hashtag.as_deref()), (1, Some("#a")));

        let bad = format!("{}\n1,ann,2,3,v1,q1,zero,,1,4\n", CSV_HEADER.join(","));
        let err = read_csv(bad.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("reading CSV"), "{err}");

        let missing = "rater_id,rater_name\n1,ann\n";
        assert!(read_csv(missing.as_bytes()).is_err());

        let mut good = Vec::new();
        write_jsonl(&tricky()[..1], &mut good).unwrap();
        let mut text = String::from_utf8(good).unwrap();
        text.push_str("{\"rater_id\": \"x\"}\n");
        let err = read_jsonl(text.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
