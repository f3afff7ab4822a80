//! Reading and writing single rows: the cached statements per table and the conditional put, update and
//! delete each write applies inside its savepoint.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use super::backend;
use crate::store::{Condition, Delete, Item, Put, StoreError, StoreResult, Table, Update};

/// The per-item statements, written out per table so that SQLite parses each once per connection
/// (`prepare_cached`) instead of once per call: the inference hot path runs them on every request.
mod statements {
    macro_rules! per_table {
        ($read:ident, $upsert:ident, $delete:ident, $table:literal) => {
            pub const $read: &str = concat!(
                "SELECT attrs, expires_at FROM ",
                $table,
                " WHERE pk = ?1 AND sk = ?2 AND (expires_at IS NULL OR expires_at > ?3)"
            );
            pub const $upsert: &str = concat!(
                "INSERT INTO ",
                $table,
                " (pk, sk, attrs, expires_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (pk, sk) DO UPDATE SET attrs = excluded.attrs, expires_at = excluded.expires_at"
            );
            pub const $delete: &str = concat!("DELETE FROM ", $table, " WHERE pk = ?1 AND sk = ?2");
        };
    }
    per_table!(READ_MAIN, UPSERT_MAIN, DELETE_MAIN, "items_main");
    per_table!(READ_VAULT, UPSERT_VAULT, DELETE_VAULT, "items_vault");
}

pub(super) fn read_live(conn: &Connection, table: Table, pk: &str, sk: &str, now: i64) -> StoreResult<Option<Item>> {
    let row = conn
        .prepare_cached(match table {
            Table::Main => statements::READ_MAIN,
            Table::Vault => statements::READ_VAULT,
        })
        .and_then(|mut stmt| {
            stmt.query_row(params![pk, sk, now], |row| Ok((row.get::<_, String>(0)?, row.get::<_, Option<i64>>(1)?)))
                .optional()
        })
        .map_err(backend)?;
    row.map(|(attrs, expires_at)| decode(pk.to_owned(), sk.to_owned(), &attrs, expires_at)).transpose()
}

pub(super) fn decode(pk: String, sk: String, attrs: &str, expires_at: Option<i64>) -> StoreResult<Item> {
    let attrs: Map<String, Value> =
        serde_json::from_str(attrs).map_err(|e| StoreError::Malformed(format!("{pk}/{sk}: {e}")))?;
    Ok(Item { pk, sk, attrs, expires_at })
}

fn write_item(conn: &Connection, table: Table, item: &Item) -> StoreResult<()> {
    let attrs = serde_json::to_string(&item.attrs).map_err(backend)?;
    conn.prepare_cached(match table {
        Table::Main => statements::UPSERT_MAIN,
        Table::Vault => statements::UPSERT_VAULT,
    })
    .and_then(|mut stmt| stmt.execute(params![item.pk, item.sk, attrs, item.expires_at]))
    .map_err(backend)?;
    Ok(())
}

fn delete_row(conn: &Connection, table: Table, pk: &str, sk: &str) -> StoreResult<()> {
    conn.prepare_cached(match table {
        Table::Main => statements::DELETE_MAIN,
        Table::Vault => statements::DELETE_VAULT,
    })
    .and_then(|mut stmt| stmt.execute(params![pk, sk]))
    .map_err(backend)?;
    Ok(())
}

pub(super) fn undo_savepoint(conn: &Connection) -> StoreResult<()> {
    run_sql(conn, "ROLLBACK TO write")?;
    run_sql(conn, "RELEASE write")
}

pub(super) fn run_sql(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql).and_then(|mut stmt| stmt.execute([])).map(|_| ()).map_err(backend)
}

pub(super) fn require(condition: &Condition, live: Option<&Item>) -> StoreResult<()> {
    if condition.holds(live) { Ok(()) } else { Err(StoreError::ConditionFailed) }
}

pub(super) fn apply_put(conn: &Connection, put: &Put, now: i64) -> StoreResult<()> {
    let live = read_live(conn, put.table, &put.item.pk, &put.item.sk, now)?;
    require(&put.condition, live.as_ref())?;
    write_item(conn, put.table, &put.item)
}

pub(super) fn apply_update(conn: &Connection, update: &Update, now: i64) -> StoreResult<Item> {
    let live = read_live(conn, update.table, &update.pk, &update.sk, now)?;
    let Some(live) = live else {
        return Err(StoreError::ConditionFailed);
    };
    require(&update.condition, Some(&live))?;
    let next = update.apply_to(&live);
    write_item(conn, update.table, &next)?;
    Ok(next)
}

pub(super) fn apply_delete(conn: &Connection, delete: &Delete, now: i64) -> StoreResult<()> {
    let live = read_live(conn, delete.table, &delete.pk, &delete.sk, now)?;
    require(&delete.condition, live.as_ref())?;
    delete_row(conn, delete.table, &delete.pk, &delete.sk)
}
