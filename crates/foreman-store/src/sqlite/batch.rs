//! Files and batches on SQLite: their rows, and a batch's lines enqueued a chunk per write.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row};

use super::writer::Durability;
use super::{SqliteStore, insert_job};
use crate::batch::{BATCH_COLUMNS, Batch, FILE_COLUMNS, FileListParams, StoredFile, sql};
use crate::error::{Error, Result};
use crate::job::NewJob;

fn file_from_row(row: &Row<'_>) -> rusqlite::Result<StoredFile> {
    Ok(StoredFile {
        id: row.get(0)?,
        purpose: row.get(1)?,
        filename: row.get(2)?,
        bytes: row.get(3)?,
        lines: row.get(4)?,
        created_at: row.get(5)?,
        expires_at: row.get(6)?,
    })
}

fn batch_from_row(row: &Row<'_>) -> Result<Batch> {
    let id: String = row.get(0)?;
    let corrupt = |reason: String| Error::CorruptRow {
        id: id.clone(),
        reason,
    };
    let status: String = row.get(4)?;
    let ending: Option<String> = row.get(5)?;
    Ok(Batch {
        endpoint: row.get(1)?,
        input_file_id: row.get(2)?,
        completion_window: row.get(3)?,
        status: status.parse().map_err(|e| corrupt(format!("{e}")))?,
        ending: ending
            .map(|text| text.parse())
            .transpose()
            .map_err(|e| corrupt(format!("{e}")))?,
        metadata: row.get(6)?,
        webhook_url: row.get(7)?,
        created_at: row.get(8)?,
        expires_at: row.get(9)?,
        in_progress_at: row.get(10)?,
        finalizing_at: row.get(11)?,
        completed_at: row.get(12)?,
        failed_at: row.get(13)?,
        expired_at: row.get(14)?,
        cancelling_at: row.get(15)?,
        cancelled_at: row.get(16)?,
        total: row.get(17)?,
        completed: row.get(18)?,
        failed: row.get(19)?,
        enqueued: row.get(20)?,
        errors: row.get(21)?,
        output_file_id: row.get(22)?,
        error_file_id: row.get(23)?,
        webhook_done: row.get::<_, i64>(24)? != 0,
        caller: super::row::caller_from_row(row).map_err(&corrupt)?,
        id,
    })
}

fn batches(conn: &Connection, query: &str, values: Vec<Value>) -> Result<Vec<Batch>> {
    let mut statement = conn.prepare_cached(query)?;
    let mut rows = statement.query(rusqlite::params_from_iter(values))?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        found.push(batch_from_row(row)?);
    }
    Ok(found)
}

impl SqliteStore {
    /// See [`Store::insert_file`](crate::Store::insert_file).
    pub async fn insert_file(&self, file: StoredFile) -> Result<()> {
        self.write(Durability::Durable, move |conn, _| {
            conn.prepare_cached(sql::INSERT_FILE)?
                .execute(rusqlite::params![
                    file.id,
                    file.purpose,
                    file.filename,
                    file.bytes,
                    file.lines,
                    file.created_at,
                    file.expires_at
                ])?;
            Ok(())
        })
        .await
    }

    /// See [`Store::get_file`](crate::Store::get_file).
    pub async fn get_file(&self, id: &str) -> Result<Option<StoredFile>> {
        let id = id.to_owned();
        self.readers
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?1"))?
                    .query_row([id], file_from_row)
                    .optional()?)
            })
            .await
    }

    /// See [`Store::list_files`](crate::Store::list_files).
    pub async fn list_files(&self, params: FileListParams) -> Result<Vec<StoredFile>> {
        let (compare, order) = match params.ascending {
            true => (">", "ASC"),
            false => ("<", "DESC"),
        };
        let query = format!(
            "SELECT {FILE_COLUMNS} FROM files
             WHERE (?1 IS NULL OR purpose = ?1) AND (?2 IS NULL OR id {compare} ?2)
             ORDER BY id {order} LIMIT ?3"
        );
        self.readers
            .read(move |conn| {
                let mut statement = conn.prepare_cached(&query)?;
                let rows = statement.query_map(
                    rusqlite::params![params.purpose, params.after, i64::from(params.limit)],
                    file_from_row,
                )?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }

    /// See [`Store::expired_files`](crate::Store::expired_files).
    pub async fn expired_files(&self, now: i64, limit: u32) -> Result<Vec<StoredFile>> {
        self.readers
            .read(move |conn| {
                let mut statement = conn.prepare_cached(&format!(
                    "SELECT {FILE_COLUMNS} FROM files
                     WHERE expires_at IS NOT NULL AND expires_at <= ?1
                     ORDER BY expires_at, id LIMIT ?2"
                ))?;
                let rows =
                    statement.query_map(rusqlite::params![now, i64::from(limit)], file_from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }

    /// See [`Store::delete_file`](crate::Store::delete_file).
    pub async fn delete_file(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.write(Durability::Durable, move |conn, _| {
            Ok(conn.prepare_cached(sql::DELETE_FILE)?.execute([id])? == 1)
        })
        .await
    }

    /// See [`Store::insert_batch`](crate::Store::insert_batch).
    pub async fn insert_batch(&self, batch: Batch) -> Result<()> {
        crate::batch::check_batch(&batch)?;
        self.write(Durability::Durable, move |conn, _| {
            let (caller, caller_weight) = crate::job::caller_columns(batch.caller.as_ref());
            conn.prepare_cached(sql::INSERT_BATCH)?
                .execute(rusqlite::params![
                    batch.id,
                    batch.endpoint,
                    batch.input_file_id,
                    batch.completion_window,
                    batch.status.as_str(),
                    batch.ending.map(|e| e.as_str()),
                    batch.metadata,
                    batch.webhook_url,
                    batch.created_at,
                    batch.expires_at,
                    batch.in_progress_at,
                    batch.finalizing_at,
                    batch.completed_at,
                    batch.failed_at,
                    batch.expired_at,
                    batch.cancelling_at,
                    batch.cancelled_at,
                    batch.total,
                    batch.completed,
                    batch.failed,
                    batch.enqueued,
                    batch.errors,
                    batch.output_file_id,
                    batch.error_file_id,
                    batch.webhook_done,
                    caller,
                    i64::from(caller_weight)
                ])?;
            Ok(())
        })
        .await
    }

    /// See [`Store::get_batch`](crate::Store::get_batch).
    pub async fn get_batch(&self, id: &str) -> Result<Option<Batch>> {
        let id = id.to_owned();
        self.readers
            .read(move |conn| {
                let query = format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?1");
                Ok(batches(conn, &query, vec![Value::Text(id)])?.pop())
            })
            .await
    }

    /// See [`Store::list_batches`](crate::Store::list_batches).
    pub async fn list_batches(&self, after: Option<String>, limit: u32) -> Result<Vec<Batch>> {
        self.readers
            .read(move |conn| {
                let query = format!(
                    "SELECT {BATCH_COLUMNS} FROM batches WHERE (?1 IS NULL OR id < ?1)
                     ORDER BY id DESC LIMIT ?2"
                );
                let after = after.map_or(Value::Null, Value::Text);
                batches(conn, &query, vec![after, Value::Integer(i64::from(limit))])
            })
            .await
    }

    /// See [`Store::open_batches`](crate::Store::open_batches).
    pub async fn open_batches(&self) -> Result<Vec<Batch>> {
        self.readers
            .read(move |conn| {
                let query = format!(
                    "SELECT {BATCH_COLUMNS} FROM batches
                     WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling')
                        OR webhook_done = 0
                     ORDER BY id"
                );
                batches(conn, &query, Vec::new())
            })
            .await
    }

    /// See [`Store::save_batch`](crate::Store::save_batch).
    pub async fn save_batch(&self, batch: Batch, read_status: crate::BatchStatus) -> Result<bool> {
        crate::batch::check_batch(&batch)?;
        self.write(Durability::Durable, move |conn, _| {
            let changed = conn
                .prepare_cached(sql::SAVE_BATCH)?
                .execute(rusqlite::params![
                    batch.id,
                    batch.status.as_str(),
                    batch.ending.map(|e| e.as_str()),
                    batch.in_progress_at,
                    batch.finalizing_at,
                    batch.completed_at,
                    batch.failed_at,
                    batch.expired_at,
                    batch.cancelling_at,
                    batch.cancelled_at,
                    batch.total,
                    batch.completed,
                    batch.failed,
                    batch.enqueued,
                    batch.errors,
                    batch.output_file_id,
                    batch.error_file_id,
                    batch.webhook_done,
                    read_status.as_str()
                ])?;
            Ok(changed == 1)
        })
        .await
    }

    /// See [`Store::cancel_batch`](crate::Store::cancel_batch).
    pub async fn cancel_batch(&self, id: &str, now: i64) -> Result<bool> {
        let id = id.to_owned();
        self.write(Durability::Durable, move |conn, _| {
            Ok(conn
                .prepare_cached(sql::CANCEL_BATCH)?
                .execute(rusqlite::params![id, now])?
                == 1)
        })
        .await
    }

    /// See [`Store::enqueue_batch_lines`](crate::Store::enqueue_batch_lines).
    pub async fn enqueue_batch_lines(
        &self,
        batch_id: &str,
        jobs: Vec<NewJob>,
        enqueued: i64,
        now: i64,
    ) -> Result<Vec<crate::Job>> {
        crate::batch::check_lines(&jobs)?;
        let batch_id = batch_id.to_owned();
        let accepted_by = self.instance.clone();
        self.write(Durability::Durable, move |conn, mirror| {
            let mut created = Vec::new();
            for job in &jobs {
                let id = job.id.expect("checked above");
                let enqueued = insert_job(conn, job, id, now, accepted_by.as_deref())?;
                if enqueued.created {
                    mirror.track(&enqueued.job);
                    created.push(enqueued.job);
                }
            }
            conn.prepare_cached(sql::SET_ENQUEUED)?
                .execute(rusqlite::params![batch_id, enqueued])?;
            Ok(created)
        })
        .await
    }
}
