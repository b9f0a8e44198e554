//! Validation of incoming requests: protobuf in, a typed command out, or one
//! INVALID_ARGUMENT status listing every field that is wrong. Nothing here
//! touches the database, so a bad request never opens a transaction.

use orderflow_events::currency;
use orderflow_grpc::Violations;
use orderflow_proto::inventory::v1 as pb;
use tonic::Status;
use uuid::Uuid;

pub const MAX_SKU_LEN: usize = 64;
pub const MAX_NAME_LEN: usize = 200;
pub const MAX_REASON_LEN: usize = 500;
pub const MAX_DESCRIPTION_LEN: usize = 2000;
pub const MAX_CATEGORY_LEN: usize = 100;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_LEN: usize = 50;
pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 500;

/// An UpsertProduct request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductData {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub currency: String,
    pub unit_price_minor: i64,
    pub on_hand: i64,
    pub details: Details,
}

/// A product's searchable details as a request gives them: each `None`
/// keeps what is stored (none for a new product); `Some(None)` clears.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Details {
    pub description: Option<Option<String>>,
    pub category: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
}

impl Details {
    /// Which fields are given: description, category, tags.
    pub fn given(&self) -> [bool; 3] {
        [
            self.description.is_some(),
            self.category.is_some(),
            self.tags.is_some(),
        ]
    }
}

/// Validates the details of an upsert or an import row; each problem is
/// `(field, problem)`.
pub fn details(
    description: Option<String>,
    category: Option<String>,
    tags: Option<pb::Tags>,
    problems: &mut Vec<(&'static str, String)>,
) -> Details {
    let description = description.map(|d| {
        let d = d.trim();
        if d.chars().count() > MAX_DESCRIPTION_LEN {
            problems.push((
                "description",
                format!("at most {MAX_DESCRIPTION_LEN} characters"),
            ));
        } else if d.chars().any(|c| c.is_control() && c != '\n') {
            problems.push((
                "description",
                "must not contain control characters other than line breaks".to_owned(),
            ));
        }
        (!d.is_empty()).then(|| d.to_owned())
    });
    let category = category.map(|c| {
        let c = c.trim();
        if c.chars().count() > MAX_CATEGORY_LEN {
            problems.push(("category", format!("at most {MAX_CATEGORY_LEN} characters")));
        } else if c.chars().any(char::is_control) {
            problems.push(("category", "must not contain control characters".to_owned()));
        }
        (!c.is_empty()).then(|| c.to_owned())
    });
    let tags = tags.map(|t| {
        let mut out: Vec<String> = Vec::new();
        for tag in t.values {
            let tag = tag.trim();
            if tag.is_empty() {
                problems.push(("tags", "a tag must not be blank".to_owned()));
            } else if tag.chars().count() > MAX_TAG_LEN {
                problems.push((
                    "tags",
                    format!("a tag has at most {MAX_TAG_LEN} characters"),
                ));
            } else if tag.chars().any(char::is_control) {
                problems.push((
                    "tags",
                    "a tag must not contain control characters".to_owned(),
                ));
            } else if !out.iter().any(|t| t == tag) {
                out.push(tag.to_owned());
            }
        }
        if out.len() > MAX_TAGS {
            problems.push(("tags", format!("at most {MAX_TAGS}")));
        }
        out
    });
    Details {
        description,
        category,
        tags,
    }
}

/// An AdjustStock request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    pub product_id: Uuid,
    pub delta: i64,
    pub reason: String,
}

/// A validated ListProducts request: `after` is the last SKU of the
/// previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub page_size: i64,
    pub after: Option<String>,
}

/// # Errors
/// INVALID_ARGUMENT with one field violation per problem.
pub fn product(req: pb::UpsertProductRequest) -> Result<ProductData, Status> {
    let mut v = Violations::new();
    let product_id = v.uuid("product_id", &req.product_id);
    // SKUs are codes that people type and systems join on: no blanks.
    let sku_len = req.sku.chars().count();
    if sku_len == 0 {
        v.add("sku", "is required");
    } else if sku_len > MAX_SKU_LEN {
        v.add("sku", format!("at most {MAX_SKU_LEN} characters"));
    } else if req.sku.chars().any(|c| c.is_whitespace() || c.is_control()) {
        v.add("sku", "must not contain spaces or control characters");
    }
    text_field(&mut v, "name", &req.name, MAX_NAME_LEN);
    let (currency, unit_price_minor) = match &req.unit_price {
        None => {
            v.add("unit_price", "is required");
            (String::new(), 0)
        }
        Some(money) => {
            if money.amount_minor < 0 {
                v.add("unit_price.amount_minor", "must not be negative");
            }
            // The same list CreateOrder checks: a catalogue price in a
            // code no order can use would be a trap.
            if !currency::is_known(&money.currency) {
                v.add(
                    "unit_price.currency",
                    "must be an ISO 4217 code in use, e.g. EUR",
                );
            }
            (money.currency.clone(), money.amount_minor)
        }
    };
    if req.on_hand < 0 {
        v.add("on_hand", "must not be negative");
    }
    let mut problems = Vec::new();
    let details = details(req.description, req.category, req.tags, &mut problems);
    for (field, problem) in problems {
        v.add(field, problem);
    }
    v.into_result()?;
    let product_id = product_id.ok_or_else(|| Status::invalid_argument("invalid request"))?;
    Ok(ProductData {
        product_id,
        sku: req.sku,
        name: req.name,
        currency,
        unit_price_minor,
        on_hand: req.on_hand,
        details,
    })
}

/// # Errors
/// INVALID_ARGUMENT with one field violation per problem.
pub fn adjustment(req: pb::AdjustStockRequest) -> Result<Adjustment, Status> {
    let mut v = Violations::new();
    let product_id = v.uuid("product_id", &req.product_id);
    if req.delta == 0 {
        v.add("delta", "must not be zero");
    }
    let reason = req.reason.trim();
    text_field(&mut v, "reason", reason, MAX_REASON_LEN);
    v.into_result()?;
    let product_id = product_id.ok_or_else(|| Status::invalid_argument("invalid request"))?;
    Ok(Adjustment {
        product_id,
        delta: req.delta,
        reason: reason.to_owned(),
    })
}

/// # Errors
/// INVALID_ARGUMENT when `value` is not a UUID.
pub fn product_id(field: &str, value: &str) -> Result<Uuid, Status> {
    let mut v = Violations::new();
    let id = v.uuid(field, value);
    v.into_result()?;
    id.ok_or_else(|| Status::invalid_argument(format!("{field} is required")))
}

/// A validated ListStockImportErrors request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportErrorsQuery {
    pub import_id: Uuid,
    pub page_size: i64,
    /// The last row number of the previous page (0 for the first).
    pub after_row: i64,
}

pub const DEFAULT_ERRORS_PAGE_SIZE: i64 = 1000;
pub const MAX_ERRORS_PAGE_SIZE: i64 = 10_000;

/// # Errors
/// INVALID_ARGUMENT for a bad import id, a negative page size or a token
/// not issued for this import.
pub fn import_errors_query(
    req: &pb::ListStockImportErrorsRequest,
) -> Result<ImportErrorsQuery, Status> {
    let mut v = Violations::new();
    let import_id = v.uuid("import_id", &req.import_id);
    let page_size = match req.page_size {
        0 => DEFAULT_ERRORS_PAGE_SIZE,
        n if n < 0 => {
            v.add("page_size", "must not be negative");
            DEFAULT_ERRORS_PAGE_SIZE
        }
        n => i64::from(n).min(MAX_ERRORS_PAGE_SIZE),
    };
    let mut after_row = 0;
    if let Some(id) = import_id
        && !req.page_token.is_empty()
    {
        match crate::import::decode_errors_token(&req.page_token, id) {
            Some(row) => after_row = row,
            None => v.add(
                "page_token",
                "is not a token returned by ListStockImportErrors for this import",
            ),
        }
    }
    v.into_result()?;
    let import_id = import_id.ok_or_else(|| Status::invalid_argument("invalid request"))?;
    Ok(ImportErrorsQuery {
        import_id,
        page_size,
        after_row,
    })
}

/// # Errors
/// INVALID_ARGUMENT for a negative page size or a malformed page token.
pub fn list_query(req: &pb::ListProductsRequest) -> Result<ListQuery, Status> {
    let mut v = Violations::new();
    let page_size = match req.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n if n < 0 => {
            v.add("page_size", "must not be negative");
            DEFAULT_PAGE_SIZE
        }
        n => i64::from(n).min(MAX_PAGE_SIZE),
    };
    let after = if req.page_token.is_empty() {
        None
    } else {
        let after = decode_page_token(&req.page_token);
        if after.is_none() {
            v.add("page_token", "is not a token returned by ListProducts");
        }
        after
    };
    v.into_result()?;
    Ok(ListQuery { page_size, after })
}

const TOKEN_PREFIX: &str = "v1:";

/// The opaque token of the page after `last_sku`: hex, so that clients
/// treat it as a token rather than a SKU to edit.
pub fn encode_page_token(last_sku: &str) -> String {
    format!("{TOKEN_PREFIX}{last_sku}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The last SKU of the previous page, or `None` for anything malformed.
pub fn decode_page_token(token: &str) -> Option<String> {
    // A SKU is at most 64 characters of at most 4 bytes each.
    if token.len() > 2 * (TOKEN_PREFIX.len() + 4 * MAX_SKU_LEN) || !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let plain = String::from_utf8(bytes).ok()?;
    let sku = plain.strip_prefix(TOKEN_PREFIX)?;
    // A SKU never has spaces or control characters; a forged one with a NUL
    // would reach PostgreSQL, whose text cannot hold it (an error, not a page).
    (!sku.is_empty()
        && sku.chars().count() <= MAX_SKU_LEN
        && !sku.chars().any(|c| c.is_whitespace() || c.is_control()))
    .then(|| sku.to_owned())
}

/// Free text for people: 1 to `max` characters, not blank, no control characters.
fn text_field(v: &mut Violations, field: &str, value: &str, max: usize) {
    if let Some(problem) = text_problem(value, max) {
        v.add(field, problem);
    }
}

/// What is wrong with free text for people, if anything (see `text_field`).
pub(crate) fn text_problem(value: &str, max: usize) -> Option<String> {
    if value.trim().is_empty() {
        Some("is required".to_owned())
    } else if value.chars().count() > max {
        Some(format!("at most {max} characters"))
    } else if value.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tonic_types::StatusExt as _;

    fn valid() -> pb::UpsertProductRequest {
        pb::UpsertProductRequest {
            product_id: Uuid::new_v4().to_string(),
            sku: "SKU-1".into(),
            name: "Widget".into(),
            unit_price: Some(pb::Money {
                amount_minor: 1250,
                currency: "EUR".into(),
            }),
            on_hand: 10,
            ..Default::default()
        }
    }

    fn fields(status: &Status) -> Vec<String> {
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        status
            .get_details_bad_request()
            .expect("BadRequest detail")
            .field_violations
            .into_iter()
            .map(|f| f.field)
            .collect()
    }

    #[test]
    fn a_valid_product_passes() {
        let p = product(valid()).unwrap();
        assert_eq!(p.currency, "EUR");
        assert_eq!(p.unit_price_minor, 1250);
        assert_eq!(p.on_hand, 10);
    }

    #[test]
    fn every_bad_product_field_is_reported() {
        let req = pb::UpsertProductRequest {
            product_id: "nope".into(),
            sku: "x".repeat(65),
            name: " ".into(),
            unit_price: Some(pb::Money {
                amount_minor: -1,
                currency: "eur".into(),
            }),
            on_hand: -1,
            description: Some("d".repeat(2001)),
            category: Some("c\u{7}".into()),
            tags: Some(pb::Tags {
                values: vec![" ".into()],
            }),
        };
        assert_eq!(
            fields(&product(req).unwrap_err()),
            [
                "product_id",
                "sku",
                "name",
                "unit_price.amount_minor",
                "unit_price.currency",
                "on_hand",
                "description",
                "category",
                "tags"
            ]
        );
        let mut req = valid();
        req.unit_price = None;
        req.sku = "has space".into();
        req.name = "n".repeat(201);
        assert_eq!(
            fields(&product(req).unwrap_err()),
            ["sku", "name", "unit_price"]
        );
        // Limits count characters, not bytes.
        let mut req = valid();
        req.sku = "é".repeat(64);
        req.name = "é".repeat(200);
        assert!(product(req).is_ok());
    }

    #[test]
    fn details_not_given_are_kept_and_given_empty_are_cleared() {
        assert_eq!(product(valid()).unwrap().details, Details::default());
        let mut req = valid();
        req.description = Some("  Closed-back  ".into());
        req.category = Some(String::new());
        req.tags = Some(pb::Tags {
            values: vec!["audio".into(), " audio ".into(), "wireless".into()],
        });
        let d = product(req).unwrap().details;
        assert_eq!(d.description, Some(Some("Closed-back".to_owned())));
        assert_eq!(d.category, Some(None));
        assert_eq!(
            d.tags,
            Some(vec!["audio".to_owned(), "wireless".to_owned()])
        );
        assert_eq!(d.given(), [true, true, true]);
    }

    #[test]
    fn adjustments_need_a_delta_and_a_reason() {
        let ok = adjustment(pb::AdjustStockRequest {
            product_id: Uuid::new_v4().to_string(),
            delta: -3,
            reason: "  stock take  ".into(),
        })
        .unwrap();
        assert_eq!(ok.reason, "stock take");
        let bad = adjustment(pb::AdjustStockRequest {
            product_id: Uuid::nil().to_string(),
            delta: 0,
            reason: String::new(),
        })
        .unwrap_err();
        assert_eq!(fields(&bad), ["product_id", "delta", "reason"]);
        let bad = adjustment(pb::AdjustStockRequest {
            product_id: Uuid::new_v4().to_string(),
            delta: 1,
            reason: "r".repeat(501),
        })
        .unwrap_err();
        assert_eq!(fields(&bad), ["reason"]);
    }

    #[test]
    fn page_tokens_round_trip_and_junk_is_refused() {
        for sku in ["A", "SKU-1", &"é".repeat(64)] {
            assert_eq!(
                decode_page_token(&encode_page_token(sku)).as_deref(),
                Some(sku)
            );
        }
        for junk in [
            "",
            "zz",
            "abc",
            &"00".repeat(400),
            "76313a",
            "é",
            "76313a00",
        ] {
            assert_eq!(decode_page_token(junk), None, "{junk}");
        }
        let q = list_query(&pb::ListProductsRequest {
            page_size: 0,
            page_token: String::new(),
        })
        .unwrap();
        assert_eq!((q.page_size, q.after), (DEFAULT_PAGE_SIZE, None));
        let q = list_query(&pb::ListProductsRequest {
            page_size: 10_000,
            page_token: encode_page_token("B"),
        })
        .unwrap();
        assert_eq!(
            (q.page_size, q.after.as_deref()),
            (MAX_PAGE_SIZE, Some("B"))
        );
        let bad = list_query(&pb::ListProductsRequest {
            page_size: -1,
            page_token: "zz".into(),
        })
        .unwrap_err();
        assert_eq!(fields(&bad), ["page_size", "page_token"]);
    }
}
