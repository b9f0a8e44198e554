//! Opaque keyset page tokens for List* calls, bound to the filter they were
//! issued for, so a token replayed with another filter is refused instead of
//! silently paging through a different result set.
//!
//! A token names the last row of the page by (`time` in microseconds, `id`),
//! the order every List* call sorts by (newest first). It is hex, so it is
//! safe in JSON, URLs and logs, and says nothing a client should parse.

use uuid::Uuid;

/// The longest token `decode` accepts; real ones are about 200 characters.
const MAX_LEN: usize = 512;

/// Where the previous page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyset {
    pub at_micros: i64,
    pub id: Uuid,
}

/// Why a token was refused; both are the client's mistake (INVALID_ARGUMENT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token this service issued.
    Malformed,
    /// Issued for a different filter.
    OtherFilter,
}

/// Encodes `position` with the filter values (`None` for "any").
pub fn encode(position: Keyset, filter: &[Option<Uuid>]) -> String {
    let mut plain = format!("v1.{}.{}", position.at_micros, position.id.simple());
    for f in filter {
        plain.push('.');
        match f {
            Some(id) => plain.push_str(&id.simple().to_string()),
            None => plain.push('-'),
        }
    }
    plain.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The position in `token`, if it was issued for exactly `filter`.
///
/// # Errors
/// [`TokenError::Malformed`] for anything `encode` did not produce with a
/// filter of this length, [`TokenError::OtherFilter`] for another filter.
pub fn decode(token: &str, filter: &[Option<Uuid>]) -> Result<Keyset, TokenError> {
    let (position, issued_for) = parse(token, filter.len()).ok_or(TokenError::Malformed)?;
    if issued_for == filter {
        Ok(position)
    } else {
        Err(TokenError::OtherFilter)
    }
}

fn parse(token: &str, filters: usize) -> Option<(Keyset, Vec<Option<Uuid>>)> {
    if token.len() > MAX_LEN || !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let plain = String::from_utf8(bytes).ok()?;
    let mut parts = plain.split('.');
    if parts.next()? != "v1" {
        return None;
    }
    let at_micros = parts.next()?.parse().ok()?;
    let id = Uuid::try_parse(parts.next()?).ok()?;
    let filter = parts
        .map(|p| match p {
            "-" => Some(None),
            p => Uuid::try_parse(p).ok().map(Some),
        })
        .collect::<Option<Vec<_>>>()?;
    (filter.len() == filters).then_some((Keyset { at_micros, id }, filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_filter() {
        let pos = Keyset {
            at_micros: 1_763_900_000_123_456,
            id: Uuid::new_v4(),
        };
        let (a, b) = (Some(Uuid::new_v4()), Some(Uuid::new_v4()));
        let token = encode(pos, &[a, None]);
        assert_eq!(decode(&token, &[a, None]), Ok(pos));
        assert_eq!(decode(&token, &[b, None]), Err(TokenError::OtherFilter));
        assert_eq!(decode(&token, &[a, b]), Err(TokenError::OtherFilter));
        assert_eq!(decode(&token, &[a]), Err(TokenError::Malformed));
        assert_eq!(decode(&encode(pos, &[]), &[]), Ok(pos));
        for junk in ["", "zz", "abc", &"00".repeat(300), "76312e", "é"] {
            assert_eq!(decode(junk, &[]), Err(TokenError::Malformed), "{junk}");
        }
    }
}
