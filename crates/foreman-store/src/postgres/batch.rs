//! Files and batches on PostgreSQL: the same rows and statements as SQLite's, and a
//! batch's lines enqueued a chunk per transaction.

use tokio_postgres::Row;

use super::{PgStore, insert_job};
use crate::batch::{BATCH_COLUMNS, Batch, FILE_COLUMNS, FileListParams, StoredFile, sql};
use crate::error::{Error, Result};
use crate::job::NewJob;

fn file_from_row(row: &Row) -> StoredFile {
    StoredFile {
        id: row.get(0),
        purpose: row.get(1),
        filename: row.get(2),
        bytes: row.get(3),
        lines: row.get(4),
        created_at: row.get(5),
        expires_at: row.get(6),
    }
}

fn batch_from_row(row: &Row) -> Result<Batch> {
    let id: String = row.get(0);
    let corrupt = |reason: String| Error::CorruptRow {
        id: id.clone(),
        reason,
    };
    let status: String = row.get(4);
    let ending: Option<String> = row.get(5);
    Ok(Batch {
        endpoint: row.get(1),
        input_file_id: row.get(2),
        completion_window: row.get(3),
        status: status.parse().map_err(|e| corrupt(format!("{e}")))?,
        ending: ending
            .map(|text| text.parse())
            .transpose()
            .map_err(|e| corrupt(format!("{e}")))?,
        metadata: row.get(6),
        webhook_url: row.get(7),
        created_at: row.get(8),
        expires_at: row.get(9),
        in_progress_at: row.get(10),
        finalizing_at: row.get(11),
        completed_at: row.get(12),
        failed_at: row.get(13),
        expired_at: row.get(14),
        cancelling_at: row.get(15),
        cancelled_at: row.get(16),
        total: row.get(17),
        completed: row.get(18),
        failed: row.get(19),
        enqueued: row.get(20),
        errors: row.get(21),
        output_file_id: row.get(22),
        error_file_id: row.get(23),
        webhook_done: row.get(24),
        caller: super::row::caller_from_row(row).map_err(&corrupt)?,
        id,
    })
}

impl PgStore {
    /// See [`Store::insert_file`](crate::Store::insert_file).
    pub async fn insert_file(&self, file: StoredFile) -> Result<()> {
        self.single(async |client| {
            client
                .execute(
                    &sql::postgres(sql::INSERT_FILE),
                    &[
                        &file.id,
                        &file.purpose,
                        &file.filename,
                        &file.bytes,
                        &file.lines,
                        &file.created_at,
                        &file.expires_at,
                    ],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// See [`Store::get_file`](crate::Store::get_file).
    pub async fn get_file(&self, id: &str) -> Result<Option<StoredFile>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1"),
                &[&id],
            )
            .await?;
        Ok(row.as_ref().map(file_from_row))
    }

    /// See [`Store::list_files`](crate::Store::list_files).
    pub async fn list_files(&self, params: FileListParams) -> Result<Vec<StoredFile>> {
        let (compare, order) = match params.ascending {
            true => (">", "ASC"),
            false => ("<", "DESC"),
        };
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {FILE_COLUMNS} FROM files
                     WHERE ($1::text IS NULL OR purpose = $1) AND ($2::text IS NULL OR id {compare} $2)
                     ORDER BY id {order} LIMIT $3"
                ),
                &[&params.purpose, &params.after, &i64::from(params.limit)],
            )
            .await?;
        Ok(rows.iter().map(file_from_row).collect())
    }

    /// See [`Store::expired_files`](crate::Store::expired_files).
    pub async fn expired_files(&self, now: i64, limit: u32) -> Result<Vec<StoredFile>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {FILE_COLUMNS} FROM files
                     WHERE expires_at IS NOT NULL AND expires_at <= $1
                     ORDER BY expires_at, id LIMIT $2"
                ),
                &[&now, &i64::from(limit)],
            )
            .await?;
        Ok(rows.iter().map(file_from_row).collect())
    }

    /// See [`Store::delete_file`](crate::Store::delete_file).
    pub async fn delete_file(&self, id: &str) -> Result<bool> {
        let changed = self
            .single(async |client| {
                Ok(client
                    .execute(&sql::postgres(sql::DELETE_FILE), &[&id])
                    .await?)
            })
            .await?;
        Ok(changed == 1)
    }

    /// See [`Store::insert_batch`](crate::Store::insert_batch).
    pub async fn insert_batch(&self, batch: Batch) -> Result<()> {
        crate::batch::check_batch(&batch)?;
        let (caller, caller_weight) = crate::job::caller_columns(batch.caller.as_ref());
        let caller_weight = i32::try_from(caller_weight).unwrap_or(i32::MAX);
        self.single(async |client| {
            client
                .execute(
                    &sql::postgres(sql::INSERT_BATCH),
                    &[
                        &batch.id,
                        &batch.endpoint,
                        &batch.input_file_id,
                        &batch.completion_window,
                        &batch.status.as_str(),
                        &batch.ending.map(|e| e.as_str()),
                        &batch.metadata,
                        &batch.webhook_url,
                        &batch.created_at,
                        &batch.expires_at,
                        &batch.in_progress_at,
                        &batch.finalizing_at,
                        &batch.completed_at,
                        &batch.failed_at,
                        &batch.expired_at,
                        &batch.cancelling_at,
                        &batch.cancelled_at,
                        &batch.total,
                        &batch.completed,
                        &batch.failed,
                        &batch.enqueued,
                        &batch.errors,
                        &batch.output_file_id,
                        &batch.error_file_id,
                        &batch.webhook_done,
                        &caller,
                        &caller_weight,
                    ],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// See [`Store::get_batch`](crate::Store::get_batch).
    pub async fn get_batch(&self, id: &str) -> Result<Option<Batch>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = $1"),
                &[&id],
            )
            .await?;
        row.as_ref().map(batch_from_row).transpose()
    }

    /// See [`Store::list_batches`](crate::Store::list_batches).
    pub async fn list_batches(&self, after: Option<String>, limit: u32) -> Result<Vec<Batch>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {BATCH_COLUMNS} FROM batches WHERE ($1::text IS NULL OR id < $1)
                     ORDER BY id DESC LIMIT $2"
                ),
                &[&after, &i64::from(limit)],
            )
            .await?;
        rows.iter().map(batch_from_row).collect()
    }

    /// See [`Store::open_batches`](crate::Store::open_batches).
    pub async fn open_batches(&self) -> Result<Vec<Batch>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {BATCH_COLUMNS} FROM batches
                     WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling')
                        OR NOT webhook_done
                     ORDER BY id"
                ),
                &[],
            )
            .await?;
        rows.iter().map(batch_from_row).collect()
    }

    /// See [`Store::save_batch`](crate::Store::save_batch).
    pub async fn save_batch(&self, batch: Batch, read_status: crate::BatchStatus) -> Result<bool> {
        crate::batch::check_batch(&batch)?;
        let changed = self
            .single(async |client| {
                Ok(client
                    .execute(
                        &sql::postgres(sql::SAVE_BATCH),
                        &[
                            &batch.id,
                            &batch.status.as_str(),
                            &batch.ending.map(|e| e.as_str()),
                            &batch.in_progress_at,
                            &batch.finalizing_at,
                            &batch.completed_at,
                            &batch.failed_at,
                            &batch.expired_at,
                            &batch.cancelling_at,
                            &batch.cancelled_at,
                            &batch.total,
                            &batch.completed,
                            &batch.failed,
                            &batch.enqueued,
                            &batch.errors,
                            &batch.output_file_id,
                            &batch.error_file_id,
                            &batch.webhook_done,
                            &read_status.as_str(),
                        ],
                    )
                    .await?)
            })
            .await?;
        Ok(changed == 1)
    }

    /// See [`Store::cancel_batch`](crate::Store::cancel_batch).
    pub async fn cancel_batch(&self, id: &str, now: i64) -> Result<bool> {
        let changed = self
            .single(async |client| {
                Ok(client
                    .execute(&sql::postgres(sql::CANCEL_BATCH), &[&id, &now])
                    .await?)
            })
            .await?;
        Ok(changed == 1)
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
        let accepted_by = self.instance.as_deref();
        let created = self
            .transaction(async |tx| {
                let mut created = Vec::new();
                for job in &jobs {
                    let id = job.id.expect("checked above");
                    let enqueued = insert_job(tx, job, id, now, accepted_by).await?;
                    if enqueued.created {
                        created.push(enqueued.job);
                    }
                }
                tx.execute(&sql::postgres(sql::SET_ENQUEUED), &[&batch_id, &enqueued])
                    .await?;
                Ok(created)
            })
            .await?;
        if let Some(first) = created.first() {
            // One announcement wakes the runners for the whole chunk.
            self.announce_new(first.id).await;
        }
        Ok(created)
    }
}
