//! Cursor pagination. Lists are newest first; since ids are UUIDv7, the id of
//! the last item is the cursor, encoded opaque so clients do not build their own.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::error::{CoreError, FieldError, Invalid};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 100;

/// A validated page request: at most `limit` items older than `before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub before: Option<Uuid>,
}

impl PageRequest {
    pub fn first(limit: u32) -> Self {
        Self {
            limit,
            before: None,
        }
    }

    /// Validates the raw query values.
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, CoreError> {
        let mut errors = Vec::new();
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            errors.push(FieldError::new(
                "limit",
                Invalid::new("out_of_range", format!("must be between 1 and {MAX_LIMIT}")),
            ));
        }
        let before = match cursor.filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => match decode_cursor(c) {
                Some(id) => Some(id),
                None => {
                    errors.push(FieldError::new(
                        "cursor",
                        Invalid::new("invalid_cursor", "not a cursor this service issued"),
                    ));
                    None
                }
            },
        };
        if errors.is_empty() {
            Ok(Self { limit, before })
        } else {
            Err(CoreError::Validation(errors))
        }
    }

    /// How many rows an adapter fetches: one more than asked, to learn
    /// whether there is a next page without a count query.
    pub fn fetch_limit(&self) -> u32 {
        self.limit + 1
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `fetch_limit()` rows, newest first.
    pub fn from_rows(mut rows: Vec<T>, req: PageRequest, key: impl Fn(&T) -> Uuid) -> Self {
        let limit = req.limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| encode_cursor(key(last)))
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn decode_cursor(s: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
    Uuid::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_bad_input() {
        let id = Uuid::now_v7();
        let c = encode_cursor(id);
        assert_eq!(
            PageRequest::parse(Some(10), Some(&c)).ok(),
            Some(PageRequest {
                limit: 10,
                before: Some(id)
            })
        );
        assert!(PageRequest::parse(Some(0), None).is_err());
        assert!(PageRequest::parse(Some(101), None).is_err());
        assert!(PageRequest::parse(None, Some("!!")).is_err());
        assert!(PageRequest::parse(None, Some("YWJj")).is_err());
        assert_eq!(
            PageRequest::parse(None, None).ok().map(|p| p.limit),
            Some(DEFAULT_LIMIT)
        );
    }

    #[test]
    fn next_cursor_only_when_more_rows() {
        let req = PageRequest::first(2);
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let page = Page::from_rows(ids.clone(), req, |u| *u);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor, Some(encode_cursor(ids[1])));
        let page = Page::from_rows(ids[..2].to_vec(), req, |u| *u);
        assert_eq!(page.next_cursor, None);
    }
}
