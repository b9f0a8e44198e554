//! The simulated card gateway: a pure function with deterministic rules, so
//! every outcome of the saga can be provoked on purpose (see README.md).
//! Nothing leaves the process.

use uuid::Uuid;

/// Always declined: "card declined".
pub const TOKEN_DECLINED: &str = "tok_declined";
/// Always declined: "insufficient funds".
pub const TOKEN_INSUFFICIENT_FUNDS: &str = "tok_insufficient_funds";
/// The largest amount approved, in minor units (10,000.00 in a currency with
/// two decimals). The gateway knows no exchange rates: the limit is in minor
/// units whatever the currency.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000;

/// A charge as the gateway sees it.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    /// Our payment id, sent as the idempotency key; the reference of an
    /// approved charge derives from it, so a replay gets the same reference.
    pub payment_id: Uuid,
    pub token: &'a str,
    pub amount_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approved { reference: String },
    Declined { reason: String },
}

/// The rules, first match wins: the two declining tokens, then the amount
/// limit; anything else (`tok_visa`, an empty token) is approved.
pub fn authorize(charge: Charge<'_>) -> Decision {
    let declined = |reason: &str| Decision::Declined {
        reason: reason.to_owned(),
    };
    match charge.token {
        TOKEN_DECLINED => declined("card declined"),
        TOKEN_INSUFFICIENT_FUNDS => declined("insufficient funds"),
        _ if charge.amount_minor > MAX_AMOUNT_MINOR => declined("amount over the limit"),
        _ => Decision::Approved {
            reference: format!("sim_{}", charge.payment_id.simple()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(token: &str, amount_minor: i64) -> Decision {
        authorize(Charge {
            payment_id: Uuid::nil(),
            token,
            amount_minor,
        })
    }

    fn declined(reason: &str) -> Decision {
        Decision::Declined {
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn declining_tokens() {
        assert_eq!(decide("tok_declined", 100), declined("card declined"));
        assert_eq!(
            decide("tok_insufficient_funds", 100),
            declined("insufficient funds")
        );
        // The token rule wins over the amount rule.
        assert_eq!(decide("tok_declined", 5_000_000), declined("card declined"));
    }

    #[test]
    fn the_amount_limit_is_inclusive() {
        assert!(matches!(
            decide("tok_visa", MAX_AMOUNT_MINOR),
            Decision::Approved { .. }
        ));
        assert_eq!(
            decide("tok_visa", MAX_AMOUNT_MINOR + 1),
            declined("amount over the limit")
        );
    }

    #[test]
    fn anything_else_is_approved_with_a_stable_reference() {
        let id = Uuid::new_v4();
        for token in ["tok_visa", "", "tok_mastercard"] {
            let charge = Charge {
                payment_id: id,
                token,
                amount_minor: 2500,
            };
            assert_eq!(
                authorize(charge),
                Decision::Approved {
                    reference: format!("sim_{}", id.simple())
                }
            );
        }
        assert!(matches!(decide("tok_visa", 0), Decision::Approved { .. }));
    }
}
