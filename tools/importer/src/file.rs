//! Reading a stock file: CSV with the header
//! `sku,name,unit_price_minor,currency,quantity`, optionally followed by
//! any of `description`, `category` and `tags` (tags separated by `|`),
//! one product per record. A column the file does not have leaves what
//! the server stores; an empty field clears it.
//! A record that cannot be read into a row (wrong field count, a number
//! that is not one, invalid UTF-8) becomes a row with `client_error` set,
//! so the server reports it with the others; only I/O errors stop reading.

use std::{fs::File, io::BufReader, path::Path};

use anyhow::{Context as _, bail};
use orderflow_proto::inventory::v1 as pb;

pub const HEADER: [&str; 5] = ["sku", "name", "unit_price_minor", "currency", "quantity"];

/// The columns that may follow [`HEADER`], in any order.
pub const OPTIONAL: [&str; 3] = ["description", "category", "tags"];

/// Separates the tags of the `tags` field.
pub const TAG_SEPARATOR: char = '|';

/// Where a record starts, to seek back to it when resuming.
pub type Position = csv::Position;

pub struct RowReader {
    reader: csv::Reader<BufReader<File>>,
    record: csv::ByteRecord,
    /// The file's length and whether it ends with a newline: the csv
    /// crate numbers a record by where parsing began (blank lines before it
    /// included), so the line is worked out from where the record ended.
    len: u64,
    ends_with_newline: bool,
    /// The file's columns: [`HEADER`] then optional ones.
    columns: Vec<String>,
}

impl RowReader {
    /// Opens `path` and checks its header.
    ///
    /// # Errors
    /// When the file cannot be read or its first line is not [`HEADER`].
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let (len, ends_with_newline) = {
            use std::io::{Read as _, Seek as _, SeekFrom};
            let mut f =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let len = f.metadata()?.len();
            let mut last = [0u8; 1];
            if len > 0 {
                f.seek(SeekFrom::End(-1))?;
                f.read_exact(&mut last)?;
            }
            (len, last[0] == b'\n')
        };
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(true)
            .from_reader(BufReader::with_capacity(1 << 20, file));
        let header = reader
            .byte_headers()
            .with_context(|| format!("cannot read {}", path.display()))?;
        let fields: Vec<String> = header
            .iter()
            .map(|f| String::from_utf8_lossy(f).trim().to_ascii_lowercase())
            .collect();
        let extra = fields.get(HEADER.len()..).unwrap_or_default();
        let extra_ok = extra
            .iter()
            .enumerate()
            .all(|(i, f)| OPTIONAL.contains(&f.as_str()) && !extra[..i].contains(f));
        if fields.get(..HEADER.len()) != Some(&HEADER.map(str::to_owned)[..]) || !extra_ok {
            bail!(
                "{} is not a stock file: its first line must be `{}` (then any of {}), not `{}`",
                path.display(),
                HEADER.join(","),
                OPTIONAL.join(", "),
                fields.join(",")
            );
        }
        Ok(Self {
            reader,
            record: csv::ByteRecord::new(),
            len,
            ends_with_newline,
            columns: fields,
        })
    }

    /// Where the next record starts.
    pub fn position(&self) -> Position {
        self.reader.position().clone()
    }

    /// Continues reading at `position` (from [`Self::position`]).
    ///
    /// # Errors
    /// I/O errors.
    pub fn seek(&mut self, position: Position) -> anyhow::Result<()> {
        self.reader.seek(position)?;
        Ok(())
    }

    /// The next row, numbered by the line it starts on; `None` at the end.
    ///
    /// # Errors
    /// I/O errors only: a malformed record is a row with `client_error`.
    pub fn next_row(&mut self) -> anyhow::Result<Option<pb::StockRow>> {
        if !self.reader.read_byte_record(&mut self.record)? {
            return Ok(None);
        }
        let after = self.reader.position();
        let newline_read = after.byte() < self.len || self.ends_with_newline;
        let inner_newlines = self
            .record
            .iter()
            .map(|f| f.iter().filter(|&&b| b == b'\n').count() as u64)
            .sum::<u64>();
        let line = after.line() - u64::from(newline_read) - inner_newlines;
        let row_number = i64::try_from(line).context("line number out of range")?;
        Ok(Some(parse(row_number, &self.record, &self.columns)))
    }
}

fn parse(row_number: i64, record: &csv::ByteRecord, columns: &[String]) -> pb::StockRow {
    let mut row = pb::StockRow {
        row_number,
        ..pb::StockRow::default()
    };
    if record.len() != columns.len() {
        row.sku = record
            .get(0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .unwrap_or_default();
        row.client_error = format!(
            "line {row_number}: {} fields, expected {} ({})",
            record.len(),
            columns.len(),
            columns.join(",")
        );
        return row;
    }
    let mut problems = Vec::new();
    let mut text = |i: usize| match std::str::from_utf8(&record[i]) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            problems.push(format!("{}: not valid UTF-8", columns[i]));
            String::from_utf8_lossy(&record[i]).into_owned()
        }
    };
    for (i, column) in columns.iter().enumerate().skip(HEADER.len()) {
        let value = text(i);
        match column.as_str() {
            "description" => row.description = Some(value),
            "category" => row.category = Some(value),
            _ => {
                row.tags = Some(pb::Tags {
                    values: value
                        .split(TAG_SEPARATOR)
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect(),
                });
            }
        }
    }
    row.sku = text(0);
    row.name = text(1);
    let price = text(2);
    let currency = text(3);
    let quantity = text(4);
    let mut number = |field: &str, value: &str| match value.trim().parse::<i64>() {
        Ok(n) => n,
        Err(_) => {
            problems.push(format!("{field}: not a whole number: {value:?}"));
            0
        }
    };
    let amount_minor = number(HEADER[2], &price);
    row.quantity = number(HEADER[4], &quantity);
    row.unit_price = Some(pb::Money {
        amount_minor,
        currency: currency.trim().to_owned(),
    });
    if !problems.is_empty() {
        row.client_error = problems.join("; ");
    }
    row
}

/// What identifies the file's content for the server (`source`):
/// `sha256:<hex>`. The server refuses a SKU given twice in one source,
/// also when the same file is imported again.
///
/// # Errors
/// I/O errors.
pub fn fingerprint(path: &Path) -> anyhow::Result<String> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("sha256:{hex}"))
}

/// Lines in the file (for the progress bar's length), counted fast.
///
/// # Errors
/// I/O errors.
pub fn count_lines(path: &Path) -> anyhow::Result<u64> {
    use std::io::Read as _;
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write as _;

    use super::*;

    #[test]
    fn rows_are_numbered_by_line_and_bad_records_carry_an_error() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        write!(
            f,
            "sku,name,unit_price_minor,currency,quantity\n\
             A,\"Mug, large\",1250,EUR,3\n\
             \n\
             B,Plate,12.5,EUR,x\n\
             C,only three,1\n\
             D,\"two\nlines\",-1, EUR ,-2\n\
             E,Bowl,100,EUR,1\n\
             \n\
             F,Cup,100,EUR,1"
        )
        .unwrap();
        let mut r = RowReader::open(f.path()).unwrap();
        let mut rows = Vec::new();
        let mut positions = Vec::new();
        loop {
            positions.push(r.position());
            match r.next_row().unwrap() {
                Some(row) => rows.push(row),
                None => break,
            }
        }
        let lines: Vec<i64> = rows.iter().map(|r| r.row_number).collect();
        assert_eq!(lines, [2, 4, 5, 6, 8, 10]);
        assert_eq!(rows[0].name, "Mug, large");
        assert_eq!(rows[0].unit_price.as_ref().unwrap().amount_minor, 1250);
        assert!(rows[0].client_error.is_empty());
        assert_eq!(
            rows[1].client_error,
            "unit_price_minor: not a whole number: \"12.5\"; quantity: not a whole number: \"x\""
        );
        assert!(
            rows[2]
                .client_error
                .starts_with("line 5: 3 fields, expected 5")
        );
        assert_eq!(rows[2].sku, "C");
        assert!(
            rows[3].client_error.is_empty(),
            "negatives are the server's to refuse"
        );
        assert_eq!(rows[3].unit_price.as_ref().unwrap().currency, "EUR");
        assert_eq!(rows[3].quantity, -2);

        // Seeking back to a record's position reads it again.
        r.seek(positions[3].clone()).unwrap();
        assert_eq!(r.next_row().unwrap().unwrap().row_number, 6);
        assert_eq!(count_lines(f.path()).unwrap(), 9);
    }

    #[test]
    fn optional_columns_are_read_when_the_header_has_them() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        write!(
            f,
            "sku,name,unit_price_minor,currency,quantity,tags,description\n\
             A,Mug,1250,EUR,3,kitchen | stoneware,\"Large, blue\"\n\
             B,Plate,100,EUR,1,,\n"
        )
        .unwrap();
        let mut r = RowReader::open(f.path()).unwrap();
        let a = r.next_row().unwrap().unwrap();
        assert!(a.client_error.is_empty(), "{}", a.client_error);
        assert_eq!(a.description.as_deref(), Some("Large, blue"));
        assert_eq!(a.category, None, "no category column: kept");
        assert_eq!(a.tags.unwrap().values, ["kitchen", "stoneware"]);
        let b = r.next_row().unwrap().unwrap();
        assert_eq!(b.description.as_deref(), Some(""), "empty: cleared");
        assert_eq!(b.tags.unwrap().values, Vec::<String>::new());

        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "sku,name,unit_price_minor,currency,quantity,tags,tags").unwrap();
        assert!(RowReader::open(f.path()).is_err());
    }

    #[test]
    fn a_file_without_the_header_is_refused() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "A,Mug,1250,EUR,3").unwrap();
        let err = RowReader::open(f.path()).err().unwrap();
        assert!(err.to_string().contains("is not a stock file"), "{err}");
    }
}
