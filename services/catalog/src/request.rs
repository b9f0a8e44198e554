//! Validation of incoming requests: protobuf in, a typed search out, or one
//! INVALID_ARGUMENT status listing every field that is wrong. Nothing here
//! touches the database.

use orderflow_events::currency;
use orderflow_grpc::Violations;
use orderflow_proto::catalog::v1 as pb;
use sha2::{Digest as _, Sha256};
use tonic::Status;
use uuid::Uuid;

use crate::query::Query;

pub const DEFAULT_PAGE_SIZE: i64 = 20;
pub const MAX_PAGE_SIZE: i64 = 100;
/// How deep a search can page: beyond it, narrow the query.
pub const MAX_OFFSET: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Relevance,
    PriceAscending,
    PriceDescending,
    Name,
}

/// Which products a search or a facet count considers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filters {
    pub category: Option<String>,
    pub currency: Option<String>,
    pub min_price_minor: Option<i64>,
    pub max_price_minor: Option<i64>,
    pub in_stock_only: bool,
}

/// A SearchProducts request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    pub query: Query,
    pub filters: Filters,
    pub sort: Sort,
    pub page_size: i64,
    pub offset: i64,
    /// What the page token is bound to: the query, filters and sort.
    fingerprint: [u8; 8],
}

impl Search {
    /// The token of the page after this one.
    pub fn next_page_token(&self) -> String {
        encode_token(self.fingerprint, self.offset + self.page_size)
    }

    /// Whether a next page may exist within [`MAX_OFFSET`].
    pub fn can_page_on(&self) -> bool {
        self.offset + self.page_size <= MAX_OFFSET
    }
}

/// # Errors
/// INVALID_ARGUMENT with one field violation per problem.
pub fn search(req: &pb::SearchProductsRequest) -> Result<Search, Status> {
    let mut v = Violations::new();
    let query = parse_query(&mut v, &req.query);
    let filters = filters(
        &mut v,
        &req.category,
        &req.currency,
        req.min_price_minor,
        req.max_price_minor,
        req.in_stock_only,
    );
    let sort = match pb::SortOrder::try_from(req.sort) {
        Ok(pb::SortOrder::Unspecified) if query.as_ref().is_some_and(|q| !q.is_empty()) => {
            Sort::Relevance
        }
        Ok(pb::SortOrder::Unspecified | pb::SortOrder::Name) => Sort::Name,
        Ok(pb::SortOrder::Relevance) => Sort::Relevance,
        Ok(pb::SortOrder::PriceAscending) => Sort::PriceAscending,
        Ok(pb::SortOrder::PriceDescending) => Sort::PriceDescending,
        Err(_) => {
            v.add("sort", "is not a SortOrder");
            Sort::Name
        }
    };
    let page_size = match req.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n if n < 0 => {
            v.add("page_size", "must not be negative");
            DEFAULT_PAGE_SIZE
        }
        n => i64::from(n).min(MAX_PAGE_SIZE),
    };
    let fingerprint = fingerprint(req);
    let offset = if req.page_token.is_empty() {
        0
    } else {
        match decode_token(&req.page_token, fingerprint) {
            Some(offset) => offset,
            None => {
                v.add(
                    "page_token",
                    "is not a token returned by SearchProducts for this query, filters and sort",
                );
                0
            }
        }
    };
    v.into_result()?;
    let query = query.ok_or_else(|| Status::invalid_argument("query: invalid"))?;
    Ok(Search {
        query,
        filters,
        sort,
        page_size,
        offset,
        fingerprint,
    })
}

/// A ListCategories request: the query and filters whose products to count.
///
/// # Errors
/// INVALID_ARGUMENT for a bad query.
pub fn categories(req: &pb::ListCategoriesRequest) -> Result<(Query, Filters), Status> {
    let mut v = Violations::new();
    let query = parse_query(&mut v, &req.query);
    v.into_result()?;
    let query = query.ok_or_else(|| Status::invalid_argument("query: invalid"))?;
    Ok((
        query,
        Filters {
            in_stock_only: req.in_stock_only,
            ..Filters::default()
        },
    ))
}

/// A UUID field (a product's or a rebuild's id).
///
/// # Errors
/// INVALID_ARGUMENT when `value` is not a UUID.
pub fn uuid_field(field: &str, value: &str) -> Result<Uuid, Status> {
    let mut v = Violations::new();
    let id = v.uuid(field, value);
    v.into_result()?;
    id.ok_or_else(|| Status::invalid_argument(format!("{field} is required")))
}

fn parse_query(v: &mut Violations, query: &str) -> Option<Query> {
    match Query::parse(query) {
        Ok(q) => Some(q),
        Err(e) => {
            v.add("query", e.to_string());
            None
        }
    }
}

fn filters(
    v: &mut Violations,
    category: &str,
    currency_code: &str,
    min: Option<i64>,
    max: Option<i64>,
    in_stock_only: bool,
) -> Filters {
    let category = category.trim();
    if category.chars().count() > 100 || category.chars().any(char::is_control) {
        v.add("category", "at most 100 characters, no control characters");
    }
    let currency_code = currency_code.trim();
    if !currency_code.is_empty() && !currency::is_known(currency_code) {
        v.add("currency", "must be an ISO 4217 code in use, e.g. EUR");
    }
    if (min.is_some() || max.is_some()) && currency_code.is_empty() {
        v.add(
            "currency",
            "is required with min_price_minor or max_price_minor",
        );
    }
    for (field, bound) in [("min_price_minor", min), ("max_price_minor", max)] {
        if bound.is_some_and(|b| b < 0) {
            v.add(field, "must not be negative");
        }
    }
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        v.add("max_price_minor", "must not be below min_price_minor");
    }
    Filters {
        category: (!category.is_empty()).then(|| category.to_owned()),
        currency: (!currency_code.is_empty()).then(|| currency_code.to_owned()),
        min_price_minor: min,
        max_price_minor: max,
        in_stock_only,
    }
}

/// What a page token is valid for: everything in the request but the page.
fn fingerprint(req: &pb::SearchProductsRequest) -> [u8; 8] {
    let mut h = Sha256::new();
    for part in [&req.query, &req.category, &req.currency] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for bound in [req.min_price_minor, req.max_price_minor] {
        h.update(bound.map_or_else(|| "-".to_owned(), |b| b.to_string()));
        h.update([0]);
    }
    h.update([u8::from(req.in_stock_only)]);
    h.update(req.sort.to_le_bytes());
    let digest = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

const TOKEN_PREFIX: &str = "s1";

fn encode_token(fingerprint: [u8; 8], offset: i64) -> String {
    let hex: String = fingerprint.iter().map(|b| format!("{b:02x}")).collect();
    format!("{TOKEN_PREFIX}.{hex}.{offset}")
}

fn decode_token(token: &str, fingerprint: [u8; 8]) -> Option<i64> {
    let mut parts = token.split('.');
    let (prefix, hex, offset) = (parts.next()?, parts.next()?, parts.next()?);
    if prefix != TOKEN_PREFIX || parts.next().is_some() {
        return None;
    }
    let expected: String = fingerprint.iter().map(|b| format!("{b:02x}")).collect();
    let offset: i64 = offset.parse().ok()?;
    (hex == expected && (1..=MAX_OFFSET).contains(&offset)).then_some(offset)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tonic_types::StatusExt as _;

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
    fn a_search_pages_with_a_token_bound_to_its_request() {
        let mut req = pb::SearchProductsRequest {
            query: "mug".into(),
            page_size: 500,
            ..Default::default()
        };
        let first = search(&req).unwrap();
        assert_eq!((first.page_size, first.offset), (MAX_PAGE_SIZE, 0));
        assert_eq!(first.sort, Sort::Relevance);
        req.page_token = first.next_page_token();
        assert_eq!(search(&req).unwrap().offset, 100);
        // The same token for another query is refused.
        req.query = "cup".into();
        assert_eq!(fields(&search(&req).unwrap_err()), ["page_token"]);
        req.page_token = "s1.zz.5".into();
        assert_eq!(fields(&search(&req).unwrap_err()), ["page_token"]);
    }

    #[test]
    fn every_bad_field_is_reported() {
        let req = pb::SearchProductsRequest {
            query: "x".repeat(10_000),
            category: "c".repeat(101),
            currency: String::new(),
            min_price_minor: Some(-1),
            max_price_minor: Some(-5),
            sort: 99,
            page_size: -1,
            ..Default::default()
        };
        assert_eq!(
            fields(&search(&req).unwrap_err()),
            [
                "query",
                "category",
                "currency",
                "min_price_minor",
                "max_price_minor",
                "max_price_minor",
                "sort",
                "page_size"
            ]
        );
        let only_operators = pb::SearchProductsRequest {
            query: "- OR \"\"".into(),
            ..Default::default()
        };
        assert_eq!(fields(&search(&only_operators).unwrap_err()), ["query"]);
    }

    #[test]
    fn an_empty_query_browses_by_name() {
        let s = search(&pb::SearchProductsRequest::default()).unwrap();
        assert!(s.query.is_empty());
        assert_eq!(s.sort, Sort::Name);
    }
}
