//! The rows of an import stream: validation of each row (a bad row is
//! rejected with a reason, never fatal), of each message (a malformed
//! stream is one INVALID_ARGUMENT), and the chunk they are collected into.

use std::collections::HashMap;

use orderflow_events::currency;
use orderflow_grpc::Violations;
use orderflow_proto::inventory::v1 as pb;
use tonic::Status;
use uuid::Uuid;

use crate::request::{Details, MAX_NAME_LEN, MAX_SKU_LEN, details, text_problem};

/// The most rows one `ImportStockRequest` may carry: bounds what the
/// server decodes at once (with gRPC's 4 MiB message limit).
pub const MAX_ROWS_PER_MESSAGE: usize = 1000;

/// The namespace of import sources: a client's `source` string becomes
/// the UUIDv5 that products are marked with.
pub const SOURCE_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_7266_6c6f_7769_6d70_6f72_7401);

/// Bad row numbers listed in one INVALID_ARGUMENT.
pub const MAX_BAD_ROWS_REPORTED: usize = 20;

/// The longest `source` accepted.
pub const MAX_SOURCE_LEN: usize = 256;

/// The longest reason and SKU stored with a rejected row.
const MAX_REASON_LEN: usize = 500;

/// The UUID products are marked with for a client's `source`.
pub fn source_id(source: &str) -> Uuid {
    Uuid::new_v5(&SOURCE_NAMESPACE, source.as_bytes())
}

/// Good rows as columns, ready to be bound as arrays.
#[derive(Debug, Default, Clone)]
pub struct GoodRows {
    pub row_number: Vec<i64>,
    pub product_id: Vec<Uuid>,
    pub sku: Vec<String>,
    pub name: Vec<String>,
    pub currency: Vec<String>,
    pub unit_price_minor: Vec<i64>,
    pub on_hand: Vec<i64>,
    /// Description, category and tags; what a row does not give is kept.
    pub details: Vec<Details>,
}

impl GoodRows {
    pub fn len(&self) -> usize {
        self.row_number.len()
    }

    pub fn is_empty(&self) -> bool {
        self.row_number.is_empty()
    }

    fn push(&mut self, row: ValidRow) {
        self.row_number.push(row.row_number);
        // Only used when the SKU is new: a known SKU keeps its product.
        // Time-ordered, so new products append to the primary key's index
        // (random UUIDv5 ids made the upsert twice as slow on 2M rows).
        self.product_id.push(Uuid::now_v7());
        self.sku.push(row.sku);
        self.name.push(row.name);
        self.currency.push(row.currency);
        self.unit_price_minor.push(row.unit_price_minor);
        self.on_hand.push(row.on_hand);
        self.details.push(row.details);
    }

    /// Keeps the rows for which `keep(index)` holds, in order.
    pub fn retain(&mut self, keep: impl FnMut(usize) -> bool) {
        let keep: Vec<bool> = (0..self.len()).map(keep).collect();
        keep_only(&mut self.row_number, &keep);
        keep_only(&mut self.product_id, &keep);
        keep_only(&mut self.sku, &keep);
        keep_only(&mut self.name, &keep);
        keep_only(&mut self.currency, &keep);
        keep_only(&mut self.unit_price_minor, &keep);
        keep_only(&mut self.on_hand, &keep);
        keep_only(&mut self.details, &keep);
    }

    /// A copy of the rows at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Self {
        let pick = |v: &Vec<String>| indices.iter().map(|&i| v[i].clone()).collect();
        Self {
            row_number: indices.iter().map(|&i| self.row_number[i]).collect(),
            product_id: indices.iter().map(|&i| self.product_id[i]).collect(),
            sku: pick(&self.sku),
            name: pick(&self.name),
            currency: pick(&self.currency),
            unit_price_minor: indices.iter().map(|&i| self.unit_price_minor[i]).collect(),
            on_hand: indices.iter().map(|&i| self.on_hand[i]).collect(),
            details: indices.iter().map(|&i| self.details[i].clone()).collect(),
        }
    }

    /// Reorders the rows by SKU: concurrent imports lock products in the
    /// same order (no deadlock between them), and a file sorted by SKU
    /// appends to the SKU index. In place: no row is copied.
    pub fn sort_by_sku(&mut self) {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_unstable_by(|&a, &b| self.sku[a].cmp(&self.sku[b]));
        permute(&mut self.row_number, &order);
        permute(&mut self.product_id, &order);
        permute(&mut self.sku, &order);
        permute(&mut self.name, &order);
        permute(&mut self.currency, &order);
        permute(&mut self.unit_price_minor, &order);
        permute(&mut self.on_hand, &order);
        permute(&mut self.details, &order);
    }
}

/// `v[i]` becomes the old `v[order[i]]`.
fn permute<T: Default>(v: &mut Vec<T>, order: &[usize]) {
    let mut old: Vec<T> = std::mem::take(v);
    *v = order.iter().map(|&i| std::mem::take(&mut old[i])).collect();
}

fn keep_only<T>(v: &mut Vec<T>, keep: &[bool]) {
    let mut i = 0;
    v.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

/// A row that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub row_number: i64,
    /// Sanitised for storage: no control characters, at most 64 characters.
    pub sku: String,
    pub reason: String,
}

impl Rejected {
    pub fn new(row_number: i64, sku: &str, reason: &str) -> Self {
        Self {
            row_number,
            sku: sanitize(sku, MAX_SKU_LEN),
            reason: sanitize(reason, MAX_REASON_LEN),
        }
    }
}

/// Printable text of at most `max` characters (PostgreSQL text takes no NUL).
fn sanitize(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// The rows received since the last commit, good and rejected.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The highest row number received in the chunk (0 when empty).
    pub last_row: i64,
    pub first_row: i64,
    pub good: GoodRows,
    pub rejected: Vec<Rejected>,
    /// SKU -> the row that gave it, to refuse a SKU given twice in the chunk
    /// (the upsert cannot touch a row twice in one statement).
    seen: HashMap<String, i64>,
}

impl Chunk {
    pub fn len(&self) -> usize {
        self.good.len() + self.rejected.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Validates `row` and adds it, good or rejected. Row numbers were
    /// checked by [`check_message`].
    pub fn push(&mut self, row: pb::StockRow) {
        if self.is_empty() {
            self.first_row = row.row_number;
        }
        self.last_row = row.row_number;
        match validate(row) {
            Ok(valid) => match self.seen.get(&valid.sku) {
                Some(&first) => self.rejected.push(Rejected::new(
                    valid.row_number,
                    &valid.sku,
                    &format!("sku: {} was already given on row {first}", valid.sku),
                )),
                None => {
                    self.seen.insert(valid.sku.clone(), valid.row_number);
                    self.good.push(valid);
                }
            },
            Err(rejected) => self.rejected.push(rejected),
        }
    }

    /// Drops the rows at or below `last_committed`: a resumed stream may
    /// repeat rows an earlier stream committed.
    pub fn skip_through(&mut self, last_committed: i64) {
        if self.first_row > last_committed {
            return;
        }
        let rows = self.good.row_number.clone();
        self.good.retain(|i| rows[i] > last_committed);
        self.rejected.retain(|r| r.row_number > last_committed);
        self.first_row = self
            .good
            .row_number
            .first()
            .copied()
            .into_iter()
            .chain(self.rejected.first().map(|r| r.row_number))
            .min()
            .unwrap_or(0);
    }

    /// Frees what only collecting needed, before the chunk waits to be written.
    pub fn seal(&mut self) {
        self.seen = HashMap::new();
    }

    /// Moves the good rows `reasons` names (by index) to the rejected ones.
    pub fn reject(&mut self, reasons: &HashMap<usize, String>) {
        for (&i, reason) in reasons {
            self.rejected.push(Rejected::new(
                self.good.row_number[i],
                &self.good.sku[i],
                reason,
            ));
        }
        self.good.retain(|i| !reasons.contains_key(&i));
        self.rejected.sort_unstable_by_key(|r| r.row_number);
    }
}

#[derive(Debug)]
struct ValidRow {
    row_number: i64,
    sku: String,
    name: String,
    currency: String,
    unit_price_minor: i64,
    on_hand: i64,
    details: Details,
}

/// The same rules as UpsertProduct, one reason listing every problem.
fn validate(row: pb::StockRow) -> Result<ValidRow, Rejected> {
    if !row.client_error.is_empty() {
        return Err(Rejected::new(row.row_number, &row.sku, &row.client_error));
    }
    let mut problems: Vec<String> = Vec::new();
    let sku_len = row.sku.chars().count();
    if sku_len == 0 {
        problems.push("sku: is required".to_owned());
    } else if sku_len > MAX_SKU_LEN {
        problems.push(format!("sku: at most {MAX_SKU_LEN} characters"));
    } else if row.sku.chars().any(|c| c.is_whitespace() || c.is_control()) {
        problems.push("sku: must not contain spaces or control characters".to_owned());
    }
    if let Some(problem) = text_problem(&row.name, MAX_NAME_LEN) {
        problems.push(format!("name: {problem}"));
    }
    let (currency, unit_price_minor) = match row.unit_price {
        None => {
            problems.push("unit_price: is required".to_owned());
            (String::new(), 0)
        }
        Some(money) => {
            if money.amount_minor < 0 {
                problems.push("unit_price.amount_minor: must not be negative".to_owned());
            }
            if !currency::is_known(&money.currency) {
                problems.push(
                    "unit_price.currency: must be an ISO 4217 code in use, e.g. EUR".to_owned(),
                );
            }
            (money.currency, money.amount_minor)
        }
    };
    if row.quantity < 0 {
        problems.push("quantity: must not be negative".to_owned());
    }
    let mut detail_problems = Vec::new();
    let details = details(
        row.description,
        row.category,
        row.tags,
        &mut detail_problems,
    );
    problems.extend(
        detail_problems
            .into_iter()
            .map(|(field, problem)| format!("{field}: {problem}")),
    );
    if !problems.is_empty() {
        return Err(Rejected::new(
            row.row_number,
            &row.sku,
            &problems.join("; "),
        ));
    }
    Ok(ValidRow {
        row_number: row.row_number,
        sku: row.sku,
        name: row.name,
        currency,
        unit_price_minor,
        on_hand: row.quantity,
        details,
    })
}

/// Checks one message of the stream; returns the import id (the one of
/// the first message, `import_id` once known).
///
/// # Errors
/// INVALID_ARGUMENT naming every problem: the stream is malformed.
pub fn check_message(
    msg: &pb::ImportStockRequest,
    import_id: Option<Uuid>,
    previous_row: i64,
) -> Result<Uuid, Status> {
    let mut v = Violations::new();
    let id = match import_id {
        None => v.uuid("import_id", &msg.import_id),
        Some(id) => {
            if !msg.import_id.is_empty() && msg.import_id != id.to_string() {
                v.add(
                    "import_id",
                    format!("must be empty or {id}, the import_id of the stream's first message"),
                );
            }
            Some(id)
        }
    };
    if msg.source.chars().count() > MAX_SOURCE_LEN {
        v.add("source", format!("at most {MAX_SOURCE_LEN} characters"));
    }
    if msg.rows.len() > MAX_ROWS_PER_MESSAGE {
        v.add(
            "rows",
            format!(
                "at most {MAX_ROWS_PER_MESSAGE} rows per message, got {}",
                msg.rows.len()
            ),
        );
    }
    let mut previous = previous_row;
    let mut bad_rows = 0;
    for (i, row) in msg.rows.iter().enumerate() {
        let bad = row.row_number < 1 || row.row_number <= previous;
        if bad && bad_rows == MAX_BAD_ROWS_REPORTED {
            // Every row's violation would make a status too large for
            // clients to read (hyper's client takes 16 KiB of trailers).
            v.add(
                "rows",
                format!("only the first {MAX_BAD_ROWS_REPORTED} bad row numbers are listed"),
            );
            break;
        }
        bad_rows += usize::from(bad);
        if row.row_number < 1 {
            v.add(format!("rows[{i}].row_number"), "must be 1 or more");
        } else if row.row_number <= previous {
            v.add(
                format!("rows[{i}].row_number"),
                format!("must be greater than the previous row's ({previous})"),
            );
        }
        previous = previous.max(row.row_number);
    }
    v.into_result()?;
    id.ok_or_else(|| Status::invalid_argument("import_id: is required"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn row(n: i64, sku: &str, price: i64, quantity: i64) -> pb::StockRow {
        pb::StockRow {
            row_number: n,
            sku: sku.to_owned(),
            name: "Widget".to_owned(),
            unit_price: Some(pb::Money {
                amount_minor: price,
                currency: "EUR".to_owned(),
            }),
            quantity,
            client_error: String::new(),
            ..Default::default()
        }
    }

    #[test]
    fn good_and_bad_rows_are_sorted_out() {
        let mut chunk = Chunk::default();
        chunk.push(row(2, "A", 100, 1));
        chunk.push(row(3, "", -1, -1));
        chunk.push(row(4, "A", 100, 2));
        chunk.push(pb::StockRow {
            client_error: "line 5: 3 fields, expected 5".to_owned(),
            ..row(5, "B\0", 1, 1)
        });
        chunk.push(row(6, "C", 5, 0));
        assert_eq!((chunk.first_row, chunk.last_row, chunk.len()), (2, 6, 5));
        assert_eq!(chunk.good.sku, ["A", "C"]);
        let rejected: Vec<_> = chunk
            .rejected
            .iter()
            .map(|r| (r.row_number, r.sku.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(
            rejected,
            [
                (
                    3,
                    "",
                    "sku: is required; unit_price.amount_minor: must not be negative; quantity: must not be negative"
                ),
                (4, "A", "sku: A was already given on row 2"),
                (5, "B\u{fffd}", "line 5: 3 fields, expected 5"),
            ]
        );
        chunk.skip_through(3);
        assert_eq!(chunk.good.sku, ["C"]);
        assert_eq!(chunk.rejected.len(), 2);
    }

    #[test]
    fn rows_sort_by_sku_and_can_be_rejected_later() {
        let mut chunk = Chunk::default();
        for (i, sku) in ["D", "A", "C", "B"].into_iter().enumerate() {
            chunk.push(row(i as i64 + 1, sku, 1, 1));
        }
        let id_of_a = chunk.good.product_id[1];
        chunk.good.sort_by_sku();
        assert_eq!(chunk.good.sku, ["A", "B", "C", "D"]);
        assert_eq!(chunk.good.row_number, [2, 4, 3, 1]);
        assert_eq!(chunk.good.product_id[0], id_of_a);
        chunk.reject(&HashMap::from([(1, "taken".to_owned())]));
        assert_eq!(chunk.good.sku, ["A", "C", "D"]);
        assert_eq!(chunk.good.row_number, [2, 3, 1]);
        assert_eq!(chunk.rejected[0].row_number, 4);
    }

    #[test]
    fn malformed_messages_are_invalid_argument() {
        let ok = pb::ImportStockRequest {
            import_id: Uuid::new_v4().to_string(),
            source: "sha256:00".to_owned(),
            rows: vec![row(1, "A", 1, 1), row(5, "B", 1, 1)],
        };
        let id = check_message(&ok, None, 0).unwrap();
        let later = pb::ImportStockRequest {
            import_id: String::new(),
            source: String::new(),
            rows: vec![row(6, "C", 1, 1)],
        };
        assert_eq!(check_message(&later, Some(id), 5).unwrap(), id);

        let fields = |s: Status| {
            use tonic_types::StatusExt as _;
            assert_eq!(s.code(), tonic::Code::InvalidArgument);
            s.get_details_bad_request()
                .unwrap()
                .field_violations
                .into_iter()
                .map(|f| f.field)
                .collect::<Vec<_>>()
        };
        let first_without_id = pb::ImportStockRequest::default();
        assert_eq!(
            fields(check_message(&first_without_id, None, 0).unwrap_err()),
            ["import_id"]
        );
        let bad = pb::ImportStockRequest {
            import_id: Uuid::new_v4().to_string(),
            source: "s".repeat(MAX_SOURCE_LEN + 1),
            rows: (0..=MAX_ROWS_PER_MESSAGE as i64)
                .map(|i| row(if i == 3 { 2 } else { i + 10 }, "A", 1, 1))
                .collect(),
        };
        assert_eq!(
            fields(check_message(&bad, Some(id), 10).unwrap_err()),
            [
                "import_id",
                "source",
                "rows",
                "rows[0].row_number",
                "rows[3].row_number"
            ]
        );
    }
}
