//! Prepared statements for the queries diesel will not cache.
//!
//! diesel keeps a prepared statement per connection only for queries whose
//! SQL it knows cannot vary: never for an UPDATE (a changeset may skip
//! `None` fields), an `ON CONFLICT ... DO UPDATE`, a multi-row insert, or
//! `sql_query`. Those are parsed and planned again on every execution,
//! which on the saga's hot path was a quarter of PostgreSQL's CPU (perf:
//! `pg_analyze_and_rewrite_varparams` + `pg_plan_queries`).
//!
//! [`Cached`] marks such a query as cacheable under its SQL text (never
//! under its Rust type), so two different statements never share a cache
//! entry. Use it only where the SQL takes a bounded number of shapes (a
//! fixed statement, or a multi-row insert of at most a batch's rows):
//! every shape stays prepared for the connection's lifetime.

use diesel::{
    pg::Pg,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    result::QueryResult,
};

/// `query`, prepared once per connection and SQL text.
#[derive(Debug, Clone, Copy)]
pub struct Cached<Q>(pub Q);

/// `.cached()` on any query.
pub trait CachedExt: Sized {
    fn cached(self) -> Cached<Self> {
        Cached(self)
    }
}

impl<Q> CachedExt for Q {}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Cached<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

/// No static id: the statement cache is keyed by the SQL text and the bind
/// types, so each distinct statement gets its own entry.
impl<Q> QueryId for Cached<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Cached<Q> {
    type SqlType = Q::SqlType;
}
