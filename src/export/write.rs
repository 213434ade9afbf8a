//! A table's rows as a file: Parquet (Snappy-compressed; times as UTC timestamps in
//! milliseconds, amounts as exact decimal text), CSV (RFC 4180, a header row, times
//! in RFC 3339) or JSON lines (the rows as the API sends them).
//!
//! A [`Part`] is one file being written: rows go in one at a time and out to the
//! file as they come (Parquet a row group at a time), so an export holds at most a
//! row group per open file, however many orders it covers.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use super::rows::{Cell, Table};
use crate::analytics::render::csv_field;

/// Rows per Parquet row group: what a file holds in memory before writing it out.
const ROW_GROUP: usize = 32_768;

/// The file format of an export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Csv,
    Jsonl,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "parquet" => Ok(Format::Parquet),
            "csv" => Ok(Format::Csv),
            "jsonl" => Ok(Format::Jsonl),
            _ => Err(format!("`{s}` is not an export format (parquet, csv, jsonl)")),
        }
    }
}

impl Format {
    pub(crate) fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }
}

/// One file of a table being written.
pub(crate) enum Part<T> {
    Parquet { writer: SerializedFileWriter<File>, rows: Vec<T> },
    Csv(BufWriter<File>),
    Jsonl(BufWriter<File>),
}

impl<T: Table> Part<T> {
    /// Creates `path` for rows of `T` as `format`.
    ///
    /// # Errors
    /// The file cannot be created.
    pub(crate) fn create(path: &Path, format: Format) -> anyhow::Result<Part<T>> {
        let file = File::create(path)?;
        Ok(match format {
            Format::Parquet => {
                let schema = Arc::new(parse_message_type(&schema::<T>())?);
                let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
                Part::Parquet { writer: SerializedFileWriter::new(file, schema, props)?, rows: Vec::new() }
            }
            Format::Csv => {
                let mut out = BufWriter::new(file);
                let header: Vec<&str> = T::default().cells().into_iter().map(|(n, _)| n).collect();
                out.write_all(header.join(",").as_bytes())?;
                out.write_all(b"\r\n")?;
                Part::Csv(out)
            }
            Format::Jsonl => Part::Jsonl(BufWriter::new(file)),
        })
    }

    /// Adds a row.
    ///
    /// # Errors
    /// The file cannot be written.
    pub(crate) fn push(&mut self, row: T) -> anyhow::Result<()> {
        match self {
            Part::Parquet { writer, rows } => {
                rows.push(row);
                if rows.len() == ROW_GROUP {
                    row_group(writer, rows)?;
                    rows.clear();
                }
            }
            Part::Csv(out) => csv_row(out, &row)?,
            Part::Jsonl(out) => {
                serde_json::to_writer(&mut *out, &row)?;
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    /// Writes what is left and makes the file durable.
    ///
    /// # Errors
    /// The file cannot be written.
    pub(crate) fn finish(self) -> anyhow::Result<()> {
        let file = match self {
            Part::Parquet { mut writer, rows } => {
                if !rows.is_empty() {
                    row_group(&mut writer, &rows)?;
                }
                writer.into_inner()?
            }
            Part::Csv(out) | Part::Jsonl(out) => out.into_inner().map_err(std::io::IntoInnerError::into_error)?,
        };
        file.sync_all()?;
        Ok(())
    }
}

/// The Parquet schema of `T`: every column optional.
pub(crate) fn schema<T: Table>() -> String {
    let mut s = format!("message {} {{\n", T::NAME);
    for (name, cell) in T::default().cells() {
        let ty = match cell {
            Cell::Text(_) => "BYTE_ARRAY {name} (STRING)",
            Cell::Int(_) => "INT64 {name}",
            Cell::Time(_) => "INT64 {name} (TIMESTAMP(MILLIS,true))",
        };
        s.push_str(&format!("  OPTIONAL {};\n", ty.replace("{name}", name)));
    }
    s.push('}');
    s
}

/// Writes `rows` as one row group, a column at a time.
fn row_group<T: Table>(writer: &mut SerializedFileWriter<File>, rows: &[T]) -> anyhow::Result<()> {
    let cells: Vec<Vec<(&'static str, Cell<'_>)>> = rows.iter().map(Table::cells).collect();
    let mut rg = writer.next_row_group()?;
    let mut index = 0;
    while let Some(mut column) = rg.next_column()? {
        let mut defs = Vec::with_capacity(cells.len());
        match cells.first().map(|c| &c[index].1) {
            Some(Cell::Text(_)) => {
                let values: Vec<ByteArray> = cells
                    .iter()
                    .filter_map(|c| match &c[index].1 {
                        Cell::Text(t) => {
                            defs.push(i16::from(t.is_some()));
                            t.map(|t| ByteArray::from(t.as_bytes().to_vec()))
                        }
                        _ => None,
                    })
                    .collect();
                column.typed::<ByteArrayType>().write_batch(&values, Some(&defs), None)?;
            }
            _ => {
                let values: Vec<i64> = cells
                    .iter()
                    .filter_map(|c| {
                        let v = match &c[index].1 {
                            Cell::Int(i) => *i,
                            Cell::Time(t) => t.map(|t| t.timestamp_millis()),
                            Cell::Text(_) => None,
                        };
                        defs.push(i16::from(v.is_some()));
                        v
                    })
                    .collect();
                column.typed::<Int64Type>().write_batch(&values, Some(&defs), None)?;
            }
        }
        column.close()?;
        index += 1;
    }
    rg.close()?;
    Ok(())
}

fn csv_row<T: Table>(out: &mut BufWriter<File>, row: &T) -> anyhow::Result<()> {
    let fields: Vec<String> = row
        .cells()
        .into_iter()
        .map(|(_, cell)| match cell {
            Cell::Text(t) => csv_field(t.unwrap_or("")),
            Cell::Int(i) => i.map(|i| i.to_string()).unwrap_or_default(),
            Cell::Time(t) => t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_default(),
        })
        .collect();
    out.write_all(fields.join(",").as_bytes())?;
    out.write_all(b"\r\n")?;
    Ok(())
}
