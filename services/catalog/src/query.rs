//! The search query language, parsed here and handed to PostgreSQL as a
//! `tsquery`: words, "quoted phrases", -exclusions, OR, and a prefix match
//! on the word being typed.
//!
//! PostgreSQL's `websearch_to_tsquery` reads the same syntax but has no
//! prefix matching, which search-as-you-type needs; so the query is parsed
//! here into [`Query`] and written out in `to_tsquery` syntax. Only words
//! (letters and digits) reach that syntax, each quoted as a lexeme, so no
//! input can make it fail to parse: whatever else a user types separates
//! words. `to_tsquery('english', ...)` then stems each word and drops stop
//! words as it does for the indexed text.

/// What a query may hold before it is refused.
pub const MAX_QUERY_CHARS: usize = 500;
pub const MAX_TERMS: usize = 32;

/// A word, or the words of a phrase (adjacent, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub words: Vec<String>,
    pub negated: bool,
    /// The last word matches as a prefix (the word being typed).
    pub prefix: bool,
}

/// Terms that must all match, each a set of alternatives (`a OR b`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    pub clauses: Vec<Vec<Term>>,
}

/// Why a query cannot be searched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("at most {MAX_QUERY_CHARS} characters")]
    TooLong,
    #[error("at most {MAX_TERMS} words and phrases")]
    TooManyTerms,
    #[error("has no words to search for (only operators or punctuation)")]
    NoWords,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Or,
    Term(Term),
}

impl Query {
    /// Parses `input`; an empty or blank query is an empty [`Query`] (every
    /// product).
    ///
    /// # Errors
    /// [`QueryError`] for a query that is too long or has operators but no
    /// words.
    pub fn parse(input: &str) -> Result<Self, QueryError> {
        if input.chars().count() > MAX_QUERY_CHARS {
            return Err(QueryError::TooLong);
        }
        if input.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut tokens = tokenize(input);
        if tokens
            .iter()
            .filter(|t| matches!(t, Token::Term(_)))
            .count()
            > MAX_TERMS
        {
            return Err(QueryError::TooManyTerms);
        }
        // The word being typed: the query's last token, a bare word right at
        // the end of the input.
        let typing = !input.ends_with(char::is_whitespace) && !input.ends_with('"');
        if typing && let Some(Token::Term(t)) = tokens.last_mut() {
            t.prefix = !t.negated;
        }
        let mut clauses: Vec<Vec<Term>> = Vec::new();
        let mut join = false;
        for token in tokens {
            match token {
                Token::Or => join = !clauses.is_empty(),
                Token::Term(t) => {
                    match clauses.last_mut() {
                        Some(last) if join => last.push(t),
                        _ => clauses.push(vec![t]),
                    }
                    join = false;
                }
            }
        }
        if clauses.is_empty() {
            return Err(QueryError::NoWords);
        }
        Ok(Self { clauses })
    }

    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// The query in `to_tsquery` syntax, e.g.
    /// `('red' | 'blue') & !'wool' & 'sock':*`.
    pub fn to_tsquery(&self) -> String {
        self.render(None)
    }

    /// [`Self::to_tsquery`] with every word a product must hold required in
    /// its name (weight A: `'lamp':A`); exclusions still apply anywhere.
    pub fn to_tsquery_in_names(&self) -> String {
        self.render(Some('A'))
    }

    fn render(&self, weight: Option<char>) -> String {
        self.clauses
            .iter()
            .map(|alternatives| {
                let parts: Vec<String> = alternatives
                    .iter()
                    .map(|t| term_tsquery(t, weight))
                    .collect();
                if parts.len() == 1 {
                    parts.concat()
                } else {
                    format!("({})", parts.join(" | "))
                }
            })
            .collect::<Vec<_>>()
            .join(" & ")
    }

    /// The words a product must hold or may hold (not the excluded ones),
    /// lowercase, each once: what typo tolerance may correct.
    pub fn searched_words(&self) -> Vec<String> {
        let mut words: Vec<String> = Vec::new();
        for w in self
            .clauses
            .iter()
            .flatten()
            .filter(|t| !t.negated)
            .flat_map(|t| t.words.iter())
        {
            if !words.contains(w) {
                words.push(w.clone());
            }
        }
        words
    }

    /// The query with words replaced (`(typed, instead)` pairs), or `None`
    /// when none of them is in it. A corrected word is whole: no longer a
    /// prefix.
    pub fn corrected(&self, corrections: &[(String, String)]) -> Option<Self> {
        let mut changed = false;
        let clauses = self
            .clauses
            .iter()
            .map(|alternatives| {
                alternatives
                    .iter()
                    .map(|t| {
                        let mut t = t.clone();
                        if t.negated {
                            return t;
                        }
                        let last = t.words.len().saturating_sub(1);
                        for (i, w) in t.words.iter_mut().enumerate() {
                            if let Some((_, instead)) =
                                corrections.iter().find(|(typed, _)| typed == w)
                            {
                                *w = instead.clone();
                                changed = true;
                                if i == last {
                                    t.prefix = false;
                                }
                            }
                        }
                        t
                    })
                    .collect()
            })
            .collect();
        changed.then_some(Self { clauses })
    }
}

/// The query as a user could type it again: `"studio lamp" -brass red OR blue`.
impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let clauses: Vec<String> = self
            .clauses
            .iter()
            .map(|alternatives| {
                alternatives
                    .iter()
                    .map(|t| {
                        let words = t.words.join(" ");
                        let body = if t.words.len() > 1 {
                            format!("\"{words}\"")
                        } else {
                            words
                        };
                        if t.negated { format!("-{body}") } else { body }
                    })
                    .collect::<Vec<_>>()
                    .join(" OR ")
            })
            .collect();
        f.write_str(&clauses.join(" "))
    }
}

/// The words of `text` that typo tolerance can correct a query word to:
/// letters and digits, lowercase, three characters or more.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| correctable(w))
        .map(str::to_lowercase)
}

/// Three characters or more: shorter words have too few trigrams to
/// compare.
pub fn correctable(word: &str) -> bool {
    word.chars().count() >= 3
}

/// One term; `weight` (of a positive term) restricts its words to the
/// fields of that weight.
fn term_tsquery(t: &Term, weight: Option<char>) -> String {
    let last = t.words.len().saturating_sub(1);
    let weight = weight.filter(|_| !t.negated);
    let words: Vec<String> = t
        .words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let star = if t.prefix && i == last { "*" } else { "" };
            match (star, weight) {
                ("", None) => format!("'{w}'"),
                (star, weight) => format!(
                    "'{w}':{star}{}",
                    weight.map(String::from).unwrap_or_default()
                ),
            }
        })
        .collect();
    let body = if words.len() == 1 {
        words.concat()
    } else {
        format!("({})", words.join(" <-> "))
    };
    if t.negated { format!("!{body}") } else { body }
}

/// Splits the input into words (runs of letters and digits), phrases and
/// operators.
fn tokenize(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let negated = c == '-';
        if negated {
            chars.next();
            // A lone "-" (followed by a space or nothing) is punctuation.
            if chars.peek().is_none_or(|c| c.is_whitespace()) {
                continue;
            }
        }
        let quoted = chars.peek() == Some(&'"');
        let mut raw = String::new();
        if quoted {
            chars.next();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                raw.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '"' {
                    break;
                }
                raw.push(c);
                chars.next();
            }
        }
        if !quoted && !negated && raw == "OR" {
            tokens.push(Token::Or);
            continue;
        }
        let words: Vec<String> = raw
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        if !words.is_empty() {
            tokens.push(Token::Term(Term {
                words,
                negated,
                prefix: false,
            }));
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ts(q: &str) -> String {
        Query::parse(q).unwrap().to_tsquery()
    }

    #[test]
    fn words_phrases_exclusions_and_or() {
        assert_eq!(ts("wireless headphones "), "'wireless' & 'headphones'");
        assert_eq!(
            ts("\"noise cancelling\" -wired"),
            "('noise' <-> 'cancelling') & !'wired'"
        );
        assert_eq!(ts("red OR blue socks "), "('red' | 'blue') & 'socks'");
        assert_eq!(ts("-\"on ear\" cup "), "!('on' <-> 'ear') & 'cup'");
        // A word with punctuation inside is a phrase of its parts.
        assert_eq!(ts("wi-fi "), "('wi' <-> 'fi')");
        // OR at either end, or twice, joins nothing.
        assert_eq!(ts("OR mug OR OR "), "'mug'");
        // Lowercase "or" is a word.
        assert_eq!(ts("black or white "), "'black' & 'or' & 'white'");
    }

    #[test]
    fn the_word_being_typed_matches_as_a_prefix() {
        assert_eq!(ts("studio headph"), "'studio' & 'headph':*");
        assert_eq!(ts("studio headph "), "'studio' & 'headph'");
        assert_eq!(ts("\"studio headph"), "('studio' <-> 'headph':*)");
        assert_eq!(ts("\"studio headph\""), "('studio' <-> 'headph')");
        assert_eq!(ts("mug -blu"), "'mug' & !'blu'");
    }

    #[test]
    fn nothing_the_user_types_reaches_the_tsquery_syntax() {
        for hostile in [
            "a'b", "a & b", "a|b", "!x", "x:*", "(x", "<->", "a\\b", "'); DROP", "\u{0}x",
        ] {
            let Ok(parsed) = Query::parse(hostile) else {
                continue;
            };
            let q = parsed.to_tsquery();
            let inner: String = q
                .split('\'')
                .skip(1)
                .step_by(2)
                .collect::<Vec<_>>()
                .concat();
            assert!(inner.chars().all(char::is_alphanumeric), "{hostile} -> {q}");
        }
    }

    #[test]
    fn bad_queries_are_refused_and_empty_ones_list_everything() {
        assert!(Query::parse("").unwrap().is_empty());
        assert!(Query::parse("   ").unwrap().is_empty());
        assert_eq!(Query::parse("- OR \"\" ()"), Err(QueryError::NoWords));
        assert_eq!(Query::parse("--- !!! &&"), Err(QueryError::NoWords));
        assert_eq!(Query::parse(&"x".repeat(10_000)), Err(QueryError::TooLong));
        assert_eq!(
            Query::parse(&"a ".repeat(40)),
            Err(QueryError::TooManyTerms)
        );
    }

    #[test]
    fn typo_tolerance_corrects_the_searched_words() {
        let q = Query::parse("Headphnes -wired red OR blu \"studio lamp\" headph").unwrap();
        assert_eq!(
            q.searched_words(),
            ["headphnes", "red", "blu", "studio", "lamp", "headph"]
        );
        let fixed = q
            .corrected(&[
                ("headphnes".into(), "headphones".into()),
                ("blu".into(), "blue".into()),
                ("headph".into(), "headphones".into()),
            ])
            .unwrap();
        assert_eq!(
            fixed.to_string(),
            "headphones -wired red OR blue \"studio lamp\" headphones"
        );
        assert!(
            fixed.to_tsquery().ends_with("'headphones'"),
            "no longer a prefix"
        );
        assert_eq!(q.corrected(&[("mug".into(), "mugs".into())]), None);
        assert_eq!(
            words("Oak-desk, 2 XL lamps").collect::<Vec<_>>(),
            ["oak", "desk", "lamps"]
        );
    }
}
