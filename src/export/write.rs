//! A table's rows as a file: Parquet (Snappy-compressed; times as UTC timestamps in
//! milliseconds, amounts as exact decimal text), CSV (RFC 4180, a header row, times
//! in RFC 3339) or JSON lines (the rows as the API sends them).

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use super::rows::{Cell, Table};
use crate::analytics::render::csv_field;

/// Rows per Parquet row group.
const ROW_GROUP: usize = 65_536;

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

/// Writes `rows` to `path` as `format`.
///
/// # Errors
/// The file cannot be written.
pub(crate) fn write<T: Table>(path: &Path, rows: &[T], format: Format) -> anyhow::Result<()> {
    let file = std::fs::File::create(path)?;
    match format {
        Format::Parquet => parquet(file, rows)?,
        Format::Csv => csv(std::io::BufWriter::new(file), rows)?,
        Format::Jsonl => {
            let mut out = std::io::BufWriter::new(file);
            for row in rows {
                serde_json::to_writer(&mut out, row)?;
                out.write_all(b"\n")?;
            }
            out.into_inner().map_err(std::io::IntoInnerError::into_error)?.sync_all()?;
        }
    }
    Ok(())
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

fn parquet<T: Table>(file: std::fs::File, rows: &[T]) -> anyhow::Result<()> {
    let schema = Arc::new(parse_message_type(&schema::<T>())?);
    let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
    let mut writer = SerializedFileWriter::new(file, schema, props)?;
    for group in rows.chunks(ROW_GROUP) {
        let cells: Vec<Vec<(&'static str, Cell)>> = group.iter().map(Table::cells).collect();
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
                                t.as_deref().map(|t| ByteArray::from(t.as_bytes().to_vec()))
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
    }
    writer.into_inner()?.sync_all()?;
    Ok(())
}

fn csv<T: Table>(mut out: std::io::BufWriter<std::fs::File>, rows: &[T]) -> anyhow::Result<()> {
    let header: Vec<&str> = T::default().cells().into_iter().map(|(n, _)| n).collect();
    out.write_all(header.join(",").as_bytes())?;
    out.write_all(b"\r\n")?;
    for row in rows {
        let fields: Vec<String> = row
            .cells()
            .into_iter()
            .map(|(_, cell)| match cell {
                Cell::Text(t) => csv_field(t.as_deref().unwrap_or("")),
                Cell::Int(i) => i.map(|i| i.to_string()).unwrap_or_default(),
                Cell::Time(t) => t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_default(),
            })
            .collect();
        out.write_all(fields.join(",").as_bytes())?;
        out.write_all(b"\r\n")?;
    }
    out.into_inner().map_err(std::io::IntoInnerError::into_error)?.sync_all()?;
    Ok(())
}
