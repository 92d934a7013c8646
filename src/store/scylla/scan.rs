//! Listings that span partitions (operators' feedback and audit log):
//! partitions newest first, each read newest first, filtered while
//! reading. A page reads at most [`SCAN`] rows, so a filter that matches
//! little cannot make one request walk a whole table: such a page comes
//! back short, with a cursor. The cursor is `<partition>|<id>`, where the
//! page stopped.

use std::future::Future;

use skald_actors::ports::store::{Page, MAX_PAGE};

use super::ScyllaError;

/// Rows one page reads at most.
pub const SCAN: usize = 1_000;

/// The `before` of a partition read from its newest row: it sorts after
/// every id (UUIDv7 text is hex digits and hyphens), so one statement
/// (`id < :before`) reads a partition from its start or from a cursor.
pub const NEWEST: &str = "~";

/// One row as read: its clustering id, and the item when it is readable
/// and passes the listing's filter.
pub type Read<T> = (String, Option<T>);

/// Walks `partitions` (newest first) from `before`, reading each with
/// `read(partition, before_id, fetch)` (`before_id` is [`NEWEST`] but in
/// the cursor's partition), until `limit` items or [`SCAN`] rows.
pub async fn newest_first<T, R, Fut>(
    partitions: &[String],
    before: Option<&str>,
    limit: usize,
    mut read: R,
) -> Result<Page<T>, ScyllaError>
where
    R: FnMut(String, String, i32) -> Fut,
    Fut: Future<Output = Result<Vec<Read<T>>, ScyllaError>>,
{
    let limit = limit.clamp(1, MAX_PAGE);
    let cursor = before.and_then(|c| c.split_once('|'));
    let mut items = Vec::new();
    let mut scanned = 0;
    let from = partitions
        .iter()
        .filter(|p| cursor.is_none_or(|(at, _)| p.as_str() <= at));
    for partition in from {
        let after = cursor
            .filter(|(at, _)| *at == partition.as_str())
            .map_or(NEWEST, |(_, id)| id)
            .to_owned();
        let fetch = (SCAN - scanned) as i32;
        for (id, item) in read(partition.clone(), after, fetch).await? {
            scanned += 1;
            items.extend(item);
            if items.len() == limit || scanned == SCAN {
                return Ok(Page {
                    items,
                    next: Some(format!("{partition}|{id}")),
                });
            }
        }
    }
    Ok(Page { items, next: None })
}
