//! The SQL both backends share. Most statements are the same text on SQLite and
//! PostgreSQL (`$N` placeholders, `ON CONFLICT`, `RETURNING`, row values), so they are
//! written once here and instantiated for each backend's pool type by
//! [`shared_store!`]; what differs (connection set-up, migrations, claim locking, full
//! text search) lives in `sqlite.rs` and `postgres.rs`.

/// Implements [`Store`](super::Store) for `$store`, whose database is `$db`.
///
/// The backend must provide `read()` (a connection for one query or read
/// transaction), `migration_connection()`, `write_ingress(batches)` (stores an
/// ingress group's rows in one transaction, returning the `(channel_id,
/// external_id)` of the inbox rows it stored), `write_connection(urgent)`
/// (a writer connection; background work passes `false` and may be made to queue
/// behind urgent writers such as webhook acknowledgements), `MIGRATOR`, `SEARCH_SQL`,
/// `fts_query()`, `run_claim(conn, durable, claim)` (runs a queue claim, one `UPDATE …
/// RETURNING`, as the backend must to keep claims apart) and `begin_write(conn,
/// durable)`, which starts a
/// write transaction whose commit is flushed to disk before it returns (`durable`:
/// acknowledgements, sends about to happen, admin changes) or may be flushed with the
/// next durable commit (the worker's own bookkeeping, which a lost commit only makes
/// it redo); `run_transaction(conn, durable, script, keep)` (a [`Script`] as one
/// transaction, committed unless `keep` refuses its rows), `sync_wal()` (flushes relaxed commits
/// where the backend can do so apart from them), `pending_writes()` (the queues of
/// writes made together, where there is one writer), `resolve_in_one(conn, new)`
/// (creates what is missing of a new conversation in one statement where the backend
/// can, as `push_resolve` does; `None` where it cannot), `sent_one(conn, part)` (records
/// one sent part, see `push_sent`; returns whether another part of its conversation
/// waits) and the constants
/// `MERGES_STATEMENTS`, `SYNCS_LOG_APART` and `WRITES_IN_TURN`;
/// `$lock_inbox`/`$lock_outbox` are appended to the claim sub-selects (row locking
/// clauses).
macro_rules! shared_store {
    ($store:ty, $db:ty, backend = $backend:literal, lock_inbox = $lock_inbox:literal, lock_outbox = $lock_outbox:literal) => {
        impl $store {
            // -- telegram, discord -------------------------------------------------------
            /// Marks (or clears) an identity as unreachable and appends the platform's
            /// signal to the consent ledger: blocked withdraws AI processing and
            /// marketing; unblocked grants AI processing again (like `START`).
            async fn set_reachable(
                tx: &mut sqlx::Transaction<'_, $db>,
                tenant_id: &str,
                contact_id: &str,
                channel_id: &str,
                user_id: &str,
                reachable: bool,
                at: i64,
            ) -> $crate::store::Result<()> {
                sqlx::query(
                    "UPDATE contact_identities SET unreachable_at = $4 \
                     WHERE tenant_id = $1 AND channel_id = $2 AND external_user_id = $3",
                )
                .bind(tenant_id)
                .bind(channel_id)
                .bind(user_id)
                .bind(if reachable { None } else { Some(at) })
                .execute(&mut **tx)
                .await?;
                let purposes: &[&str] = if reachable { &["ai_processing"] } else { &["ai_processing", "marketing"] };
                for purpose in purposes {
                    sqlx::query(
                        "INSERT INTO consent_events (id, tenant_id, contact_id, purpose, granted, source, detail, at) \
                         VALUES ($1, $2, $3, $4, $5, 'platform', $6, $7)",
                    )
                    .bind($crate::store::new_id())
                    .bind(tenant_id)
                    .bind(contact_id)
                    .bind(*purpose)
                    .bind(reachable)
                    .bind(if reachable { "bot_unblocked" } else { "bot_blocked" })
                    .bind(at)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }

            /// The statements of `effects`, in order, added to `script`. Effects whose
            /// statements depend on what an earlier one read run `script` first and
            /// then run on their own; the rest stay in `script` for the caller to run
            /// (with whatever it adds after them) in as few calls as the backend takes.
            async fn apply_effects<'q>(
                tx: &mut sqlx::Transaction<'_, $db>,
                script: &mut $crate::store::shared::Script<'q, $db>,
                tenant_id: &'q str,
                effects: &'q [$crate::store::Effect],
            ) -> $crate::store::Result<()> {
                use $crate::store::Effect;
                for effect in effects {
                    if Self::push_effect(script, tenant_id, effect) {
                        continue;
                    }
                    match effect {
                        Effect::ApplyStatus { channel_id, external_id, status, error_code, error_detail } => {
                            Self::flush_script(tx, script).await?;
                            Self::apply_status(tx, tenant_id, channel_id, external_id, *status, *error_code, error_detail.as_deref()).await?;
                        }
                        Effect::RemoveMessage { conversation_id, target } => {
                            Self::flush_script(tx, script).await?;
                            Self::remove_message(tx, tenant_id, conversation_id, target).await?;
                        }
                        Effect::ApplyReceipt { channel_id, recipient, status, watermark, external_ids } => {
                            Self::flush_script(tx, script).await?;
                            let mut ids: Vec<String> = sqlx::query_scalar(
                                "SELECT external_id FROM outbox WHERE tenant_id = $1 AND channel_id = $2 \
                                 AND recipient = $3 AND external_id IS NOT NULL AND sent_at <= $4",
                            )
                            .bind(tenant_id)
                            .bind(channel_id)
                            .bind(recipient)
                            .bind(watermark.unwrap_or(i64::MIN))
                            .fetch_all(&mut **tx)
                            .await?;
                            ids.extend(external_ids.iter().cloned());
                            for id in ids {
                                Self::apply_status(tx, tenant_id, channel_id, &id, *status, None, None).await?;
                            }
                        }
                        Effect::Privacy(privacy) => {
                            Self::flush_script(tx, script).await?;
                            Self::apply_privacy(tx, tenant_id, privacy).await?
                        }
                        Effect::SetReachable { contact_id, channel_id, user_id, reachable, at } => {
                            Self::flush_script(tx, script).await?;
                            Self::set_reachable(tx, tenant_id, contact_id, channel_id, user_id, *reachable, *at).await?;
                        }
                        // Plain statements: in `script` already.
                        _ => {}
                    }
                }
                Ok(())
            }

            /// Adds `effect`'s statements to `script` if they are plain statements that
            /// need nothing read first; `false` for the others (`apply_effects` runs
            /// those).
            fn push_effect<'q>(
                script: &mut $crate::store::shared::Script<'q, $db>,
                tenant_id: &'q str,
                effect: &'q $crate::store::Effect,
            ) -> bool {
                use $crate::store::Effect;
                match effect {
                    Effect::InsertMessage { conversation_id, message } => {
                        Self::push_message(script, tenant_id, conversation_id, message);
                    }
                    Effect::EnqueueReply { conversation_id, channel_id, recipient, message, parts } => {
                        Self::push_message(script, tenant_id, conversation_id, message);
                        for (i, part) in parts.iter().enumerate() {
                            script
                                .push_chained(
                                    "INSERT INTO outbox (tenant_id, channel_id, conversation_id, message_id, part, \
                                     recipient, text, reply_to, next_attempt_at, created_at) \
                                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
                                )
                                .bind(tenant_id)
                                .bind(channel_id)
                                .bind(conversation_id)
                                .bind(&message.id)
                                .bind(i as i64)
                                .bind(recipient)
                                .bind(part)
                                .bind(if i == 0 { message.reply_to.as_deref() } else { None })
                                .bind(message.created_at);
                        }
                    }
                    Effect::RecordAiCalls { conversation_id, calls } => {
                        for c in calls {
                            Self::push_ai_call(script, tenant_id, Some(conversation_id), c);
                        }
                    }
                    Effect::EditMessage { conversation_id, target, text, content, at } => {
                        script
                            .push(
                                "UPDATE messages SET text = $4, content = $5, edited_at = $6 \
                                 WHERE tenant_id = $1 AND conversation_id = $2 AND direction = 'inbound' \
                                 AND external_id = $3",
                            )
                            .bind(tenant_id)
                            .bind(conversation_id)
                            .bind(target)
                            .bind(text)
                            .bind(content)
                            .bind(at);
                    }
                    Effect::DeleteMessage { conversation_id, target } => {
                        Self::push_delete_message_text(script, tenant_id, conversation_id, target);
                    }
                    Effect::DeleteChatMessage { channel_id, chat, target } => {
                        // No author to resolve the conversation by: the chat names it,
                        // and a chat never seen has nothing to delete.
                        script
                            .push(
                                "UPDATE messages SET text = NULL, content = NULL, kind = 'deleted', \
                                 status = 'deleted' WHERE tenant_id = $1 AND conversation_id = (\
                                 SELECT id FROM conversations \
                                 WHERE tenant_id = $1 AND channel_id = $2 AND external_chat_id = $3) \
                                 AND direction = 'inbound' AND external_id = $4",
                            )
                            .bind(tenant_id)
                            .bind(channel_id)
                            .bind(chat)
                            .bind(target);
                    }
                    Effect::Touch { conversation_id, at, inbound, disclosed } => {
                        script
                            .push_chained(
                                "UPDATE conversations SET \
                                 last_message_at = CASE WHEN last_message_at < $3 THEN $3 ELSE last_message_at END, \
                                 last_inbound_at = CASE WHEN $4 AND (last_inbound_at IS NULL OR last_inbound_at < $3) \
                                 THEN $3 ELSE last_inbound_at END, \
                                 disclosed_at = CASE WHEN $5 THEN $3 ELSE disclosed_at END \
                                 WHERE tenant_id = $1 AND id = $2",
                            )
                            .bind(tenant_id)
                            .bind(conversation_id)
                            .bind(at)
                            .bind(inbound)
                            .bind(disclosed);
                    }
                    Effect::SetConversationStatus { conversation_id, status } => {
                        script
                            .push_chained("UPDATE conversations SET status = $3 WHERE tenant_id = $1 AND id = $2")
                            .bind(tenant_id)
                            .bind(conversation_id)
                            .bind(*status);
                    }
                    // -- Meta messaging (Messenger, Instagram) --------------------------
                    Effect::TagReply { message_id, tag } => {
                        script
                            .push("UPDATE outbox SET message_tag = $3 WHERE tenant_id = $1 AND message_id = $2")
                            .bind(tenant_id)
                            .bind(message_id)
                            .bind(tag);
                    }
                    Effect::ChannelNotice { channel_id, detail } => {
                        script
                            .push("UPDATE channels SET status_detail = $3 WHERE tenant_id = $1 AND id = $2")
                            .bind(tenant_id)
                            .bind(channel_id)
                            .bind(detail);
                    }
                    // -- AI pipeline ----
                    Effect::HoldForAi { conversation_id, inbox_id, at } => {
                        script
                            .push(
                                "INSERT INTO ai_holds (inbox_id, tenant_id, conversation_id, created_at) \
                                 VALUES ($1, $2, $3, $4) ON CONFLICT (inbox_id) DO NOTHING",
                            )
                            .bind(inbox_id)
                            .bind(tenant_id)
                            .bind(conversation_id)
                            .bind(at);
                    }
                    Effect::ClearAiHold { inbox_id } => {
                        script
                            .push("DELETE FROM ai_holds WHERE tenant_id = $1 AND inbox_id = $2")
                            .bind(tenant_id)
                            .bind(inbox_id);
                    }
                    // Statements that need something read first (see `apply_effects`).
                    Effect::ApplyStatus { .. }
                    | Effect::RemoveMessage { .. }
                    | Effect::ApplyReceipt { .. }
                    | Effect::Privacy(_)
                    | Effect::SetReachable { .. } => return false,
                }
                true
            }

            /// A new script for this backend (see [`Script`]($crate::store::shared::Script)).
            fn script<'q>() -> $crate::store::shared::Script<'q, $db> {
                $crate::store::shared::Script::new(Self::MERGES_STATEMENTS)
            }

            /// Runs `script` on `conn`; returns the rows its statements returned.
            async fn run_script(
                conn: &mut <$db as sqlx::Database>::Connection,
                script: $crate::store::shared::Script<'_, $db>,
            ) -> Result<Vec<<$db as sqlx::Database>::Row>, sqlx::Error> {
                let mut rows = Vec::new();
                for (sql, args) in script.into_parts()? {
                    // The connection keeps a prepared copy of each text it runs; the
                    // texts of writes made together differ with every batch, and a
                    // large one prepares hundreds of statements: not worth keeping.
                    let persistent = $crate::store::shared::worth_keeping(&sql);
                    rows.extend(
                        sqlx::query_with(&sql, args)
                            .persistent(persistent)
                            .fetch_all(&mut *conn)
                            .await?,
                    );
                }
                Ok(rows)
            }

            /// Runs what `script` holds so far and leaves it empty.
            async fn flush_script(
                tx: &mut sqlx::Transaction<'_, $db>,
                script: &mut $crate::store::shared::Script<'_, $db>,
            ) -> Result<(), sqlx::Error> {
                if !script.is_empty() {
                    let ready = std::mem::replace(script, Self::script());
                    Self::run_script(&mut **tx, ready).await?;
                }
                Ok(())
            }

            /// Makes `item` with `make` and waits for its result. Where the backend
            /// has one writer (`pending_writes`), `item` is queued (`queue` picks the
            /// queue) and whoever gets the writer next takes the oldest queued by then,
            /// up to [`MAX_TOGETHER`](crate::store::shared::MAX_TOGETHER), and makes
            /// them in one transaction; a waiter whose item an earlier writer made
            /// returns without waiting for a turn of its own, and one whose item is
            /// still queued after its turn waits for another. Otherwise `item` is made
            /// alone, on a writer connection of its own.
            async fn made_together<T, R>(
                &self,
                queue: fn(&$crate::store::shared::PendingWrites) -> &std::sync::Mutex<Vec<$crate::store::shared::Waiting<T, R>>>,
                item: T,
                make: for<'c> fn(
                    &'c Self,
                    &'c mut <$db as sqlx::Database>::Connection,
                    Vec<$crate::store::shared::Waiting<T, R>>,
                ) -> $crate::store::shared::Making<'c>,
            ) -> $crate::store::Result<R>
            where
                T: Send,
                R: Send,
            {
                let (reply, mut answer) = tokio::sync::oneshot::channel();
                let Some(pending) = self.pending_writes() else {
                    let (_gate, mut conn) = self.write_connection(false).await?;
                    make(self, &mut conn, vec![(item, reply)]).await;
                    return answer.await.map_err(|_| $crate::store::shared::abandoned())?;
                };
                let queue = queue(pending);
                $crate::store::shared::lock(queue).push((item, reply));
                loop {
                    tokio::select! {
                        biased;
                        made = &mut answer => return made.map_err(|_| $crate::store::shared::abandoned())?,
                        writer = self.write_connection(false) => {
                            let (_gate, mut conn) = writer?;
                            let batch = $crate::store::shared::take_oldest(queue);
                            if !batch.is_empty() {
                                make(self, &mut conn, batch).await;
                            }
                        }
                    }
                }
            }

            /// Adds the statement that marks `done`'s event done if this worker still
            /// holds it; it returns the event's id when it does, and whether another
            /// event of its conversation is open (two columns).
            fn push_mark_done<'q>(
                script: &mut $crate::store::shared::Script<'q, $db>,
                done: &'q $crate::store::Completion,
            ) {
                script
                    .push_chained(concat!(
                        "UPDATE inbox_events SET state = 'done', payload = NULL, outcome = $3, done_at = $4, \
                         lease_owner = NULL, lease_until = NULL \
                         WHERE id = $1 AND lease_owner = $2 AND state = 'processing' RETURNING id, ",
                        $crate::store::shared::another_event_open!("inbox_events")
                    ))
                    .bind(done.inbox_id)
                    .bind(&done.owner)
                    .bind(&done.outcome)
                    .bind(done.now);
            }

            /// Adds a completion's effects, the marking of its event and the hand-off
            /// of its replies to `script`, if every effect is plain statements;
            /// `false` (and `script` is to be thrown away) otherwise.
            fn push_completion<'q>(
                script: &mut $crate::store::shared::Script<'q, $db>,
                done: &'q $crate::store::Completion,
            ) -> bool {
                let plain = done
                    .effects
                    .iter()
                    .all(|effect| Self::push_effect(script, &done.tenant_id, effect));
                if plain {
                    Self::push_mark_done(script, done);
                    Self::push_hand_off(script, done);
                }
                plain
            }

            /// Leases the first part of each reply `done` queues to its hand-off's
            /// dispatcher, as the outbox claim would: if the channel is active and no
            /// earlier part of the conversation waits. The parts leased come back as
            /// the script's rows (see [`completions_of`](Self::completions_of)).
            fn push_hand_off<'q>(
                script: &mut $crate::store::shared::Script<'q, $db>,
                done: &'q $crate::store::Completion,
            ) {
                let Some(to) = &done.hand_off else {
                    return;
                };
                for effect in &done.effects {
                    let $crate::store::Effect::EnqueueReply { message, conversation_id, .. } = effect else {
                        continue;
                    };
                    script
                        .push(concat!(
                            "UPDATE outbox SET state = 'sending', lease_owner = $1, lease_until = $2, \
                             attempts = attempts + 1 WHERE id IN (\
                             SELECT o.id FROM outbox o JOIN channels c ON c.id = o.channel_id \
                             WHERE o.tenant_id = $3 AND o.message_id = $4 AND o.part = 0 \
                             AND o.state = 'pending' AND o.conversation_id = $5 AND ",
                            $crate::store::shared::outbox_part_may_go!("$5"),
                            ") RETURNING ",
                            $crate::store::shared::outbox_item_columns!()
                        ))
                        .bind(&to.owner)
                        .bind(to.lease_until)
                        .bind(&done.tenant_id)
                        .bind(&message.id)
                        .bind(conversation_id);
                }
            }

            /// Events a completion script marked done: the rows of two columns (the
            /// parts handed over have more).
            fn marked(rows: &[<$db as sqlx::Database>::Row]) -> usize {
                rows.iter().filter(|row| sqlx::Row::len(*row) == 2).count()
            }

            /// Reads a completion script's rows: per completion, its marked event (two
            /// columns, missing where the lease was lost), then the parts handed
            /// over. `None` unless exactly `all` events were marked.
            fn completions_of(
                rows: &[<$db as sqlx::Database>::Row],
                all: usize,
            ) -> Option<Vec<$crate::store::Completed>> {
                let mut completed: Vec<$crate::store::Completed> = Vec::with_capacity(all);
                for row in rows {
                    if sqlx::Row::len(row) == 2 {
                        let more = sqlx::Row::try_get(row, 1).ok()?;
                        completed.push($crate::store::Completed {
                            kept: true,
                            handed: vec![],
                            more,
                            sure: Self::WRITES_IN_TURN,
                        });
                    } else {
                        let part = sqlx::FromRow::from_row(row).ok()?;
                        completed.last_mut()?.handed.push(part);
                    }
                }
                (completed.len() == all).then_some(completed)
            }

            /// One completion on the writer: its effects, then its event marked done
            /// if this worker still holds it (`BEGIN` and all of that in one call on
            /// SQLite, `COMMIT` in the next). A lost lease rolls the effects back.
            /// With parts handed over, the commit is durable where the backend does
            /// not flush its log apart (a send follows at once).
            async fn complete_one(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                done: &$crate::store::Completion,
            ) -> $crate::store::Result<$crate::store::Completed> {
                let durable = done.hand_off.is_some() && !Self::SYNCS_LOG_APART;
                let mut script = Self::script();
                if Self::push_completion(&mut script, done) {
                    let (rows, kept) = self
                        .run_transaction(conn, durable, script, Some(&|rows| Self::marked(rows) == 1))
                        .await?;
                    return Ok(match Self::completions_of(&rows, 1) {
                        Some(mut one) if kept => one.remove(0),
                        _ => $crate::store::Completed::default(),
                    });
                }
                let mut script = Self::script();
                let mut tx = self.begin_write(conn, durable).await?;
                Self::apply_effects(&mut tx, &mut script, &done.tenant_id, &done.effects).await?;
                Self::push_mark_done(&mut script, done);
                Self::push_hand_off(&mut script, done);
                let rows = Self::run_script(&mut *tx, script).await?;
                let Some(mut one) = Self::completions_of(&rows, 1) else {
                    tx.rollback().await?;
                    return Ok($crate::store::Completed::default());
                };
                tx.commit().await?;
                Ok(one.remove(0))
            }

            /// Completions that queued up for the writer, in one transaction: one
            /// commit instead of one each. If any lease was lost or a statement
            /// failed, it is rolled back and each is made on its own.
            async fn complete_together(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                batch: Vec<$crate::store::shared::Waiting<$crate::store::Completion, $crate::store::Completed>>,
            ) {
                let mut script = Self::script();
                if batch.len() > 1 && batch.iter().all(|(done, _)| Self::push_completion(&mut script, done)) {
                    let all = batch.len();
                    let durable = batch.iter().any(|(done, _)| done.hand_off.is_some()) && !Self::SYNCS_LOG_APART;
                    let together = self
                        .run_transaction(conn, durable, script, Some(&|rows| Self::marked(rows) == all))
                        .await;
                    if let Ok((rows, true)) = together {
                        if let Some(completed) = Self::completions_of(&rows, all) {
                            for ((_, reply), completed) in batch.into_iter().zip(completed) {
                                let _ = reply.send(Ok(completed));
                            }
                            return;
                        }
                    }
                }
                for (done, reply) in batch {
                    let _ = reply.send(self.complete_one(conn, &done).await);
                }
            }

            /// Adds a sent part's statements: the part, then its message from it (the
            /// first part's platform id, and `sent` once no part is unsent), which
            /// returns one row: whether another part of the conversation waits (no
            /// row where the part's lease was lost).
            fn push_sent<'q>(
                script: &mut $crate::store::shared::Script<'q, $db>,
                part: &'q $crate::store::shared::SentPart,
            ) {
                script
                    .push(
                        "UPDATE outbox SET state = 'sent', external_id = $3, sent_at = $4, text = '', \
                         delivery = COALESCE(delivery, 'sent'), lease_owner = NULL, lease_until = NULL \
                         WHERE id = $1 AND lease_owner = $2 AND state = 'sending'",
                    )
                    .bind(part.outbox_id)
                    .bind(&part.owner)
                    .bind(&part.external_id)
                    .bind(part.at);
                script
                    .push(
                        "UPDATE messages SET \
                         external_id = CASE WHEN o.part = 0 THEN $2 ELSE messages.external_id END, \
                         possible_duplicate = (messages.possible_duplicate OR o.possible_duplicate), \
                         status = CASE WHEN messages.status = 'queued' AND NOT EXISTS \
                           (SELECT 1 FROM outbox p WHERE p.message_id = o.message_id AND p.state <> 'sent') \
                           THEN 'sent' ELSE messages.status END \
                         FROM outbox o WHERE o.id = $1 AND o.state = 'sent' AND o.external_id = $2 \
                         AND o.sent_at = $3 AND messages.tenant_id = o.tenant_id AND messages.id = o.message_id \
                         RETURNING EXISTS (SELECT 1 FROM outbox p \
                           WHERE p.conversation_id = messages.conversation_id \
                           AND p.state IN ('pending', 'sending') AND p.id <> $1)",
                    )
                    .bind(part.outbox_id)
                    .bind(&part.external_id)
                    .bind(part.at);
            }

            /// Whether another part of the conversation waits, from the row a sent
            /// part's statements return (see `push_sent`); without one (the lease
            /// was lost), a claim finds out.
            fn part_waits(row: Option<&<$db as sqlx::Database>::Row>) -> bool {
                row.is_none_or(|row| sqlx::Row::try_get(row, 0).unwrap_or(true))
            }

            /// Sent parts that queued up for the writer, in one transaction (one call
            /// on SQLite); if it fails, each on its own (`sent_one`). Each learns
            /// whether another part of its conversation waits.
            async fn sent_together(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                batch: Vec<$crate::store::shared::Waiting<$crate::store::shared::SentPart, bool>>,
            ) {
                if batch.len() > 1 {
                    let mut script = Self::script();
                    for (part, _) in &batch {
                        Self::push_sent(&mut script, part);
                    }
                    let all = batch.len();
                    let together = self
                        .run_transaction(conn, false, script, Some(&|rows| rows.len() == all))
                        .await;
                    if let Ok((rows, true)) = together {
                        for ((_, reply), row) in batch.into_iter().zip(&rows) {
                            let _ = reply.send(Ok(Self::part_waits(Some(row))));
                        }
                        return;
                    }
                }
                for (part, reply) in batch {
                    let _ = reply.send(self.sent_one(conn, &part).await.map_err(Into::into));
                }
            }

            /// Adds the statements that create what is missing of a new conversation:
            /// each finds for itself what the ones before it stored, and the last
            /// returns the conversation.
            fn push_resolve<'q>(
                script: &mut $crate::store::shared::Script<'q, $db>,
                new: &'q $crate::store::shared::NewConversation,
            ) {
                let k = &new.key;
                // A phone-keyed identity the platform now reports together with a
                // platform user id, in the same payload, is the same person: re-key it.
                if let Some(phone) = k.phone.as_deref().filter(|p| *p != k.user_id) {
                    script
                        .push(
                            "UPDATE contact_identities SET external_user_id = $4 \
                             WHERE tenant_id = $1 AND channel_id = $2 AND external_user_id = $3 AND phone = $3 \
                             AND NOT EXISTS (SELECT 1 FROM contact_identities \
                               WHERE tenant_id = $1 AND channel_id = $2 AND external_user_id = $4)",
                        )
                        .bind(&k.tenant_id)
                        .bind(&k.channel_id)
                        .bind(phone)
                        .bind(&k.user_id);
                }
                // A known person's details as the platform reports them now.
                script
                    .push(
                        "UPDATE contact_identities SET phone = COALESCE($4, phone), \
                         username = COALESCE($5, username), display_name = COALESCE($6, display_name) \
                         WHERE tenant_id = $1 AND channel_id = $2 AND external_user_id = $3",
                    )
                    .bind(&k.tenant_id)
                    .bind(&k.channel_id)
                    .bind(&k.user_id)
                    .bind(&k.phone)
                    .bind(&k.username)
                    .bind(&k.name);
                // Someone new: a contact and their identity on this channel.
                script
                    .push(
                        "INSERT INTO contacts (id, tenant_id, display_name, created_at) \
                         SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM contact_identities \
                           WHERE tenant_id = $2 AND channel_id = $5 AND external_user_id = $6)",
                    )
                    .bind(&new.contact_id)
                    .bind(&k.tenant_id)
                    .bind(&k.name)
                    .bind(k.now)
                    .bind(&k.channel_id)
                    .bind(&k.user_id);
                script
                    .push(
                        "INSERT INTO contact_identities (id, tenant_id, contact_id, channel_id, \
                         external_user_id, phone, username, display_name, created_at) \
                         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE NOT EXISTS (SELECT 1 \
                           FROM contact_identities WHERE tenant_id = $2 AND channel_id = $4 AND external_user_id = $5)",
                    )
                    .bind(&new.identity_id)
                    .bind(&k.tenant_id)
                    .bind(&new.contact_id)
                    .bind(&k.channel_id)
                    .bind(&k.user_id)
                    .bind(&k.phone)
                    .bind(&k.username)
                    .bind(&k.name)
                    .bind(k.now);
                // The chat's conversation, with whoever the identity names.
                script
                    .push(
                        "INSERT INTO conversations (id, tenant_id, channel_id, contact_id, external_chat_id, \
                         last_message_at, created_at) \
                         SELECT $1, $2, $3, i.contact_id, $5, $6, $6 FROM contact_identities i \
                         WHERE i.tenant_id = $2 AND i.channel_id = $3 AND i.external_user_id = $4 \
                         ON CONFLICT (channel_id, external_chat_id) DO NOTHING",
                    )
                    .bind(&new.conversation_id)
                    .bind(&k.tenant_id)
                    .bind(&k.channel_id)
                    .bind(&k.user_id)
                    .bind(&k.chat)
                    .bind(k.now);
                script
                    .push(
                        "SELECT id, contact_id, status, disclosed_at, last_message_at, id = $4 AS created \
                         FROM conversations WHERE tenant_id = $1 AND channel_id = $2 AND external_chat_id = $3",
                    )
                    .bind(&k.tenant_id)
                    .bind(&k.channel_id)
                    .bind(&k.chat)
                    .bind(&new.conversation_id);
            }

            /// One new conversation, in one transaction (one call on SQLite; one
            /// statement where the backend has one for it, `resolve_in_one`).
            async fn resolve_one(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                new: &$crate::store::shared::NewConversation,
            ) -> $crate::store::Result<$crate::store::ConversationRef> {
                if let Some(found) = self.resolve_in_one(conn, new).await? {
                    return Ok(found);
                }
                let mut script = Self::script();
                Self::push_resolve(&mut script, new);
                let (rows, _) = self.run_transaction(conn, false, script, None).await?;
                let Some(row) = rows.first() else {
                    return Err(sqlx::Error::RowNotFound.into());
                };
                Ok(sqlx::FromRow::from_row(row)?)
            }

            /// New conversations that queued up for the writer, in one transaction:
            /// each returns one row, in order. If that fails, each on its own (every
            /// statement is safe to run again).
            async fn resolve_together(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                batch: Vec<$crate::store::shared::Waiting<$crate::store::shared::NewConversation, $crate::store::ConversationRef>>,
            ) {
                if batch.len() > 1 {
                    let mut script = Self::script();
                    for (new, _) in &batch {
                        Self::push_resolve(&mut script, new);
                    }
                    let all = batch.len();
                    let together = self
                        .run_transaction(conn, false, script, Some(&|rows| rows.len() == all))
                        .await;
                    if let Ok((rows, true)) = together {
                        let refs: Result<Vec<$crate::store::ConversationRef>, _> =
                            rows.iter().map(sqlx::FromRow::from_row).collect();
                        if let Ok(refs) = refs {
                            for ((_, reply), conversation) in batch.into_iter().zip(refs) {
                                let _ = reply.send(Ok(conversation));
                            }
                            return;
                        }
                    }
                }
                for (new, reply) in batch {
                    let _ = reply.send(self.resolve_one(conn, &new).await);
                }
            }

            /// Clears an inbound message's text and content, keeping the row as `deleted`
            /// (a platform delete: the conversation shows that something was removed).
            fn push_delete_message_text<'q>(
                script: &mut $crate::store::shared::Script<'q, $db>,
                tenant_id: &'q str,
                conversation_id: &'q str,
                target: &'q str,
            ) {
                script
                    .push(
                        "UPDATE messages SET text = NULL, content = NULL, kind = 'deleted', \
                         status = 'deleted' WHERE tenant_id = $1 AND conversation_id = $2 \
                         AND direction = 'inbound' AND external_id = $3",
                    )
                    .bind(tenant_id)
                    .bind(conversation_id)
                    .bind(target);
            }

            /// Deletes an inbound message and every raw delivery that carried it.
            async fn remove_message(
                tx: &mut sqlx::Transaction<'_, $db>,
                tenant_id: &str,
                conversation_id: &str,
                target: &str,
            ) -> $crate::store::Result<()> {
                sqlx::query(
                    "DELETE FROM messages WHERE tenant_id = $1 AND conversation_id = $2 \
                     AND direction = 'inbound' AND external_id = $3",
                )
                .bind(tenant_id)
                .bind(conversation_id)
                .bind(target)
                .execute(&mut **tx)
                .await?;
                Self::delete_envelopes_naming(tx, tenant_id, target).await?;
                Ok(())
            }

            /// Deletes the tenant's raw deliveries whose body contains `needle` (a
            /// message id, a person's id or text): unsend and erasure. Deliveries
            /// spanning several tenants are kept without a tenant, so they count too.
            async fn delete_envelopes_naming(
                tx: &mut sqlx::Transaction<'_, $db>,
                tenant_id: &str,
                needle: &str,
            ) -> $crate::store::Result<u64> {
                Ok(sqlx::query(&format!(
                    "DELETE FROM raw_envelopes WHERE (tenant_id = $1 OR tenant_id IS NULL) AND {}",
                    Self::ENVELOPE_HOLDS
                ))
                .bind(tenant_id)
                .bind(needle)
                .execute(&mut **tx)
                .await?
                .rows_affected())
            }

            /// One provider call, for accounting.
            fn push_ai_call<'q>(
                script: &mut $crate::store::shared::Script<'q, $db>,
                tenant_id: &'q str,
                conversation_id: Option<&'q str>,
                c: &'q $crate::store::AiCall,
            ) {
                script
                    .push_chained(
                        "INSERT INTO ai_calls (tenant_id, conversation_id, provider, model, outcome, input_tokens, \
                         output_tokens, cost_micros, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(tenant_id)
                    .bind(conversation_id)
                    .bind(&c.provider)
                    .bind(&c.model)
                    .bind(&c.outcome)
                    .bind(c.input_tokens)
                    .bind(c.output_tokens)
                    .bind(c.cost_micros)
                    .bind(c.created_at);
            }

            fn push_message<'q>(
                script: &mut $crate::store::shared::Script<'q, $db>,
                tenant_id: &'q str,
                conversation_id: &'q str,
                m: &'q $crate::store::NewMessage,
            ) {
                script
                    .push_chained(
                        "INSERT INTO messages (id, tenant_id, conversation_id, direction, author, kind, text, \
                         content, external_id, reply_to, status, produced_by, platform_ts, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                         ON CONFLICT (conversation_id, direction, external_id) DO NOTHING",
                    )
                    .bind(&m.id)
                    .bind(tenant_id)
                    .bind(conversation_id)
                    .bind(m.direction)
                    .bind(m.author)
                    .bind(&m.kind)
                    .bind(&m.text)
                    .bind(&m.content)
                    .bind(&m.external_id)
                    .bind(&m.reply_to)
                    .bind(m.status)
                    .bind(&m.produced_by)
                    .bind(m.platform_ts)
                    .bind(m.created_at);
            }

            /// Moves an outbound part forward (never back) and recomputes its message's
            /// status from all its parts.
            async fn apply_status(
                tx: &mut sqlx::Transaction<'_, $db>,
                tenant_id: &str,
                channel_id: &str,
                external_id: &str,
                status: channels::DeliveryStatus,
                error_code: Option<i64>,
                error_detail: Option<&str>,
            ) -> $crate::store::Result<()> {
                let message_id: Option<String> = sqlx::query_scalar(
                    "UPDATE outbox SET delivery = $4, \
                     error_code = COALESCE($5, error_code), error_detail = COALESCE($6, error_detail) \
                     WHERE tenant_id = $1 AND channel_id = $2 AND external_id = $3 AND (delivery IS NULL OR \
                     (CASE delivery WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'read' THEN 3 ELSE 4 END) < $7) \
                     RETURNING message_id",
                )
                .bind(tenant_id)
                .bind(channel_id)
                .bind(external_id)
                .bind(status.as_str())
                .bind(error_code)
                .bind(error_detail)
                .bind($crate::store::shared::status_rank(status.as_str()))
                .fetch_optional(&mut **tx)
                .await?;
                let Some(message_id) = message_id else { return Ok(()) };
                let parts: Vec<(String, Option<String>)> =
                    sqlx::query_as("SELECT state, delivery FROM outbox WHERE tenant_id = $1 AND message_id = $2")
                        .bind(tenant_id)
                        .bind(&message_id)
                        .fetch_all(&mut **tx)
                        .await?;
                let aggregate = $crate::store::shared::aggregate_status(&parts);
                sqlx::query(
                    "UPDATE messages SET status = $3, error_code = COALESCE($4, error_code), \
                     error_detail = COALESCE($5, error_detail) WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant_id)
                .bind(&message_id)
                .bind(aggregate)
                .bind(error_code)
                .bind(error_detail)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn migrate(&self) -> $crate::store::Result<()> {
                let mut conn = self.migration_connection().await?;
                Self::MIGRATOR.run_direct(&mut *conn).await?;
                Ok(())
            }

            async fn ready(&self) -> $crate::store::Result<bool> {
                let applied: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                        .fetch_one(&mut *self.read().await?)
                        .await?;
                Ok(applied as usize >= Self::MIGRATOR.iter().count())
            }

            async fn create_tenant(&self, t: &$crate::store::NewTenant) -> $crate::store::Result<()> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                sqlx::query("INSERT INTO tenants (id, name, domain, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&t.id)
                    .bind(&t.name)
                    .bind(&t.domain)
                    .bind(t.created_at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO api_keys (id, tenant_id, key_hash, prefix, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&t.key_id)
                .bind(&t.id)
                .bind(&t.key_hash)
                .bind(&t.key_prefix)
                .bind(t.created_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn tenant_by_key_hash(&self, hash: &[u8]) -> $crate::store::Result<Option<String>> {
                Ok(sqlx::query_scalar("SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
                    .bind(hash)
                    .fetch_optional(&mut *self.read().await?)
                    .await?)
            }

            async fn create_channel(&self, c: &$crate::store::NewChannel) -> $crate::store::Result<()> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                let result = sqlx::query(
                    "INSERT INTO channels (id, tenant_id, platform, account_id, credentials, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&c.id)
                .bind(&c.tenant_id)
                .bind(&c.platform)
                .bind(&c.account_id)
                .bind(&c.credentials)
                .bind(c.created_at)
                .execute(&mut *tx)
                .await;
                match result {
                    Ok(_) => Ok(tx.commit().await?),
                    Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {
                        Err($crate::store::StoreError::Conflict("a channel for this account already exists"))
                    }
                    Err(e) => Err(e.into()),
                }
            }

            async fn list_channels(&self, tenant_id: &str) -> $crate::store::Result<Vec<$crate::store::ChannelRecord>> {
                Ok(sqlx::query_as(
                    "SELECT id, tenant_id, platform, account_id, status, status_detail, credentials, created_at \
                     FROM channels WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY created_at, id",
                )
                .bind(tenant_id)
                .fetch_all(&mut *self.read().await?)
                .await?)
            }

            async fn delete_channel(&self, tenant_id: &str, channel_id: &str) -> $crate::store::Result<bool> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                let done = sqlx::query(
                    "UPDATE channels SET credentials = NULL, status = 'deleted', deleted_at = $3 \
                     WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
                )
                .bind(tenant_id)
                .bind(channel_id)
                .bind($crate::store::now_ms())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            // -- telegram, discord -----------------------------------------------------------
            async fn mark_unreachable(&self, channel_id: &str, recipient: &str, at: i64) -> $crate::store::Result<()> {
                let (_gate, mut conn) = self.write_connection(false).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                let found: Option<(String, String)> = sqlx::query_as(
                    "SELECT tenant_id, contact_id FROM contact_identities \
                     WHERE channel_id = $1 AND external_user_id = $2 AND unreachable_at IS NULL",
                )
                .bind(channel_id)
                .bind(recipient)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((tenant_id, contact_id)) = found {
                    Self::set_reachable(&mut tx, &tenant_id, &contact_id, channel_id, recipient, false, at).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn try_lease(&self, key: &str) -> $crate::store::Result<Option<Box<dyn $crate::store::Lease>>> {
                Ok(self.lease(key).await?)
            }

            async fn platform_channels(&self, platform: &str) -> $crate::store::Result<Vec<$crate::store::ChannelRecord>> {
                Ok(sqlx::query_as(
                    "SELECT id, tenant_id, platform, account_id, status, status_detail, credentials, created_at \
                     FROM channels WHERE platform = $1 AND deleted_at IS NULL ORDER BY id",
                )
                .bind(platform)
                .fetch_all(&mut *self.read().await?)
                .await?)
            }

            async fn channel(&self, channel_id: &str) -> $crate::store::Result<Option<$crate::store::ChannelRecord>> {
                Ok(sqlx::query_as(
                    "SELECT id, tenant_id, platform, account_id, status, status_detail, credentials, created_at \
                     FROM channels WHERE id = $1 AND deleted_at IS NULL",
                )
                .bind(channel_id)
                .fetch_optional(&mut *self.read().await?)
                .await?)
            }

            async fn channel_by_account(
                &self,
                platform: &str,
                account_id: &str,
            ) -> $crate::store::Result<Option<$crate::store::ChannelRecord>> {
                Ok(sqlx::query_as(
                    "SELECT id, tenant_id, platform, account_id, status, status_detail, credentials, created_at \
                     FROM channels WHERE platform = $1 AND account_id = $2 AND deleted_at IS NULL",
                )
                .bind(platform)
                .bind(account_id)
                .fetch_optional(&mut *self.read().await?)
                .await?)
            }

            async fn set_channel_status(
                &self,
                channel_id: &str,
                status: &str,
                detail: Option<&str>,
            ) -> $crate::store::Result<()> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                sqlx::query("UPDATE channels SET status = $2, status_detail = $3 WHERE id = $1 AND deleted_at IS NULL")
                    .bind(channel_id)
                    .bind(status)
                    .bind(detail)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            fn expect_ingress(&self, window: std::time::Duration) {
                self.reserve_writer(window);
            }

            async fn commit_ingress(
                &self,
                batches: &[$crate::store::IngressBatch],
            ) -> $crate::store::Result<Vec<$crate::store::IngressOutcome>> {
                let mut inserted: std::collections::HashSet<(String, String)> =
                    self.write_ingress(batches).await?.into_iter().collect();
                // The first request carrying an event is the one that stored it.
                Ok(batches
                    .iter()
                    .map(|batch| {
                        let mut outcome = $crate::store::IngressOutcome::default();
                        for ev in &batch.events {
                            if inserted.remove(&(ev.channel_id.clone(), ev.external_id.clone())) {
                                outcome.inserted += 1;
                            } else {
                                outcome.duplicates += 1;
                            }
                        }
                        outcome
                    })
                    .collect())
            }

            async fn sync_ingress(&self) -> $crate::store::Result<()> {
                Ok(self.sync_wal().await?)
            }

            async fn claim_inbox(
                &self,
                owner: &str,
                now: i64,
                lease_ms: i64,
                limit: i64,
            ) -> $crate::store::Result<Vec<$crate::store::InboxItem>> {
                let (_gate, mut conn) = self.write_connection(false).await?;
                let claim = sqlx::query_as(concat!(
                    "UPDATE inbox_events SET state = 'processing', lease_owner = $1, lease_until = $2, \
                     attempts = attempts + 1 WHERE id IN (\
                     SELECT e.id FROM inbox_events e \
                     WHERE e.state <> 'done' AND e.available_at <= $3 \
                     AND (e.state = 'pending' OR e.lease_until < $3) \
                     AND NOT EXISTS (SELECT 1 FROM inbox_events o WHERE o.conv_key = e.conv_key \
                       AND o.state <> 'done' AND o.id <> e.id \
                       AND ((o.platform_ts, o.id) < (e.platform_ts, e.id) \
                            OR (o.state = 'processing' AND o.lease_until >= $3))) \
                     ORDER BY e.id LIMIT $4",
                    $lock_inbox,
                    ") RETURNING id, tenant_id, channel_id, platform, external_id, kind, payload, attempts, received_at"
                ))
                .bind(owner)
                .bind(now + lease_ms)
                .bind(now)
                .bind(limit);
                Ok(self.run_claim(&mut conn, false, claim).await?)
            }

            async fn complete_inbox(
                &self,
                done: &$crate::store::Completion,
            ) -> $crate::store::Result<$crate::store::Completed> {
                // Whoever gets the writer makes every completion queued by then, in
                // one transaction; the others find theirs made when their turn comes.
                let completed = self
                    .made_together(|p| &p.completions, done.clone(), |store, conn, batch| {
                        Box::pin(store.complete_together(conn, batch))
                    })
                    .await?;
                if !completed.handed.is_empty() {
                    // A send follows at once: its attempt must be on disk first (SQLite
                    // flushes its log here, after the writer is free again).
                    self.sync_wal().await?;
                }
                Ok(completed)
            }

            async fn open_besides(&self, inbox_id: i64) -> $crate::store::Result<bool> {
                let open: Option<bool> = sqlx::query_scalar(concat!(
                    "SELECT ",
                    $crate::store::shared::another_event_open!("e"),
                    " FROM inbox_events e WHERE e.id = $1"
                ))
                .bind(inbox_id)
                .fetch_optional(&mut *self.read().await?)
                .await?;
                Ok(open.unwrap_or(false))
            }

            async fn retry_inbox(
                &self,
                inbox_id: i64,
                owner: &str,
                available_at: i64,
                note: &str,
            ) -> $crate::store::Result<()> {
                let (_gate, mut conn) = self.write_connection(false).await?;
                let mut tx = self.begin_write(&mut conn, false).await?;
                sqlx::query(
                    "UPDATE inbox_events SET state = 'pending', available_at = $3, outcome = $4, \
                     lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2",
                )
                .bind(inbox_id)
                .bind(owner)
                .bind(available_at)
                .bind(note)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn resolve_conversation(
                &self,
                k: &$crate::store::ConversationKey,
            ) -> $crate::store::Result<$crate::store::ConversationRef> {
                // Usually everything exists and nothing changed: a read, no write.
                let known: Option<$crate::store::ConversationRef> = sqlx::query_as(
                    "SELECT c.id, c.contact_id, c.status, c.disclosed_at, c.last_message_at, FALSE AS created \
                     FROM conversations c JOIN contact_identities i \
                       ON i.contact_id = c.contact_id AND i.channel_id = c.channel_id \
                     WHERE c.tenant_id = $1 AND c.channel_id = $2 AND c.external_chat_id = $3 \
                     AND i.external_user_id = $4 AND ($5 IS NULL OR i.phone = $5) \
                     AND ($6 IS NULL OR i.username = $6) AND ($7 IS NULL OR i.display_name = $7)",
                )
                .bind(&k.tenant_id)
                .bind(&k.channel_id)
                .bind(&k.chat)
                .bind(&k.user_id)
                .bind(&k.phone)
                .bind(&k.username)
                .bind(&k.name)
                .fetch_optional(&mut *self.read().await?)
                .await?;
                if let Some(known) = known {
                    return Ok(known);
                }
                // Otherwise create what is missing.
                let new = $crate::store::shared::NewConversation {
                    key: k.clone(),
                    contact_id: $crate::store::new_id(),
                    identity_id: $crate::store::new_id(),
                    conversation_id: $crate::store::new_id(),
                };
                // As with completions: one transaction for all that queued up.
                self.made_together(|p| &p.resolves, new, |store, conn, batch| {
                    Box::pin(store.resolve_together(conn, batch))
                })
                .await
            }

            async fn outbound_exists(&self, channel_id: &str, external_id: &str) -> $crate::store::Result<bool> {
                let found: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM outbox WHERE channel_id = $1 AND external_id = $2 LIMIT 1")
                        .bind(channel_id)
                        .bind(external_id)
                        .fetch_optional(&mut *self.read().await?)
                        .await?;
                Ok(found.is_some())
            }

            async fn apply(&self, tenant_id: &str, effects: &[$crate::store::Effect]) -> $crate::store::Result<()> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                let mut script = Self::script();
                Self::apply_effects(&mut tx, &mut script, tenant_id, effects).await?;
                Self::run_script(&mut *tx, script).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn claim_outbox(
                &self,
                owner: &str,
                now: i64,
                lease_ms: i64,
                limit: i64,
            ) -> $crate::store::Result<Vec<$crate::store::OutboxItem>> {
                let (gate, mut conn) = self.write_connection(false).await?;
                let claim = sqlx::query_as(concat!(
                    "UPDATE outbox SET state = 'sending', lease_owner = $1, lease_until = $2, \
                     attempts = attempts + 1, \
                     possible_duplicate = CASE WHEN state = 'sending' THEN TRUE ELSE possible_duplicate END \
                     WHERE id IN (\
                     SELECT o.id FROM outbox o JOIN channels c ON c.id = o.channel_id \
                     WHERE o.state IN ('pending', 'sending') AND o.next_attempt_at <= $3 \
                     AND (o.state = 'pending' OR o.lease_until < $3) AND ",
                    $crate::store::shared::outbox_part_may_go!("o.conversation_id"),
                    " ORDER BY o.next_attempt_at, o.id LIMIT $4",
                    $lock_outbox,
                    ") RETURNING ",
                    $crate::store::shared::outbox_item_columns!()
                ))
                .bind(owner)
                .bind(now + lease_ms)
                .bind(now)
                .bind(limit);
                // A send may follow at once: the attempt must be on disk first. SQLite
                // commits relaxed and flushes its log here, after the writer is free
                // again; Postgres commits the claim durably.
                let items = self.run_claim(&mut conn, !Self::SYNCS_LOG_APART, claim).await?;
                drop((gate, conn));
                self.sync_wal().await?;
                Ok(items)
            }

            async fn finish_send(
                &self,
                outbox_id: i64,
                owner: &str,
                outcome: &$crate::store::SendOutcome,
            ) -> $crate::store::Result<bool> {
                use $crate::store::SendOutcome;
                if let SendOutcome::Sent { external_id, at } = outcome {
                    let part = $crate::store::shared::SentPart {
                        outbox_id,
                        owner: owner.to_string(),
                        external_id: external_id.clone(),
                        at: *at,
                    };
                    // As with completions: one transaction for all that queued up.
                    return self
                        .made_together(|p| &p.sent, part, |store, conn, batch| {
                            Box::pin(store.sent_together(conn, batch))
                        })
                        .await;
                }
                let (_gate, mut conn) = self.write_connection(false).await?;
                let mut tx = self.begin_write(&mut conn, false).await?;
                match outcome {
                    SendOutcome::Sent { .. } => {}
                    SendOutcome::Retry { at, code, detail } => {
                        sqlx::query(
                            "UPDATE outbox SET state = 'pending', next_attempt_at = $3, error_code = $4, \
                             error_detail = $5, lease_owner = NULL, lease_until = NULL \
                             WHERE id = $1 AND lease_owner = $2 AND state = 'sending'",
                        )
                        .bind(outbox_id)
                        .bind(owner)
                        .bind(at)
                        .bind(code)
                        .bind(detail)
                        .execute(&mut *tx)
                        .await?;
                    }
                    SendOutcome::Failed { code, detail } => {
                        let row: Option<(String, String)> = sqlx::query_as(
                            "UPDATE outbox SET state = 'failed', error_code = $3, error_detail = $4, text = '', \
                             lease_owner = NULL, lease_until = NULL \
                             WHERE id = $1 AND lease_owner = $2 AND state = 'sending' \
                             RETURNING tenant_id, message_id",
                        )
                        .bind(outbox_id)
                        .bind(owner)
                        .bind(code)
                        .bind(detail)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some((tenant_id, message_id)) = row {
                            sqlx::query(
                                "UPDATE messages SET status = 'failed', error_code = $3, error_detail = $4 \
                                 WHERE tenant_id = $1 AND id = $2",
                            )
                            .bind(&tenant_id)
                            .bind(&message_id)
                            .bind(code)
                            .bind(detail)
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                    SendOutcome::Parked { at } => {
                        sqlx::query(
                            "UPDATE outbox SET state = 'pending', next_attempt_at = $3, attempts = attempts - 1, \
                             lease_owner = NULL, lease_until = NULL \
                             WHERE id = $1 AND lease_owner = $2 AND state = 'sending'",
                        )
                        .bind(outbox_id)
                        .bind(owner)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn list_conversations(
                &self,
                tenant_id: &str,
                f: &$crate::store::ConversationFilter,
            ) -> $crate::store::Result<Vec<$crate::store::ConversationRecord>> {
                let (after_at, after_id) = match &f.after {
                    Some((at, id)) => (Some(*at), Some(id.as_str())),
                    None => (None, None),
                };
                Ok(sqlx::query_as(
                    "SELECT c.id, c.channel_id, ch.platform, c.contact_id, c.external_chat_id, c.status, c.last_message_at, c.created_at \
                     FROM conversations c JOIN channels ch ON ch.id = c.channel_id \
                     WHERE c.tenant_id = $1 AND ($2 IS NULL OR ch.platform = $2) AND ($3 IS NULL OR c.status = $3) \
                     AND ($4 IS NULL OR c.last_message_at < $4 OR (c.last_message_at = $4 AND c.id < $5)) \
                     ORDER BY c.last_message_at DESC, c.id DESC LIMIT $6",
                )
                .bind(tenant_id)
                .bind(&f.platform)
                .bind(&f.status)
                .bind(after_at)
                .bind(after_id)
                .bind(f.limit)
                .fetch_all(&mut *self.read().await?)
                .await?)
            }

            async fn conversation(
                &self,
                tenant_id: &str,
                id: &str,
            ) -> $crate::store::Result<Option<$crate::store::ConversationRecord>> {
                Ok(sqlx::query_as(
                    "SELECT c.id, c.channel_id, ch.platform, c.contact_id, c.external_chat_id, c.status, c.last_message_at, c.created_at \
                     FROM conversations c JOIN channels ch ON ch.id = c.channel_id \
                     WHERE c.tenant_id = $1 AND c.id = $2",
                )
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&mut *self.read().await?)
                .await?)
            }

            async fn messages(
                &self,
                tenant_id: &str,
                conversation_id: &str,
            ) -> $crate::store::Result<Vec<$crate::store::MessageRecord>> {
                Ok(sqlx::query_as(
                    "SELECT id, direction, author, kind, text, content, external_id, reply_to, status, error_code, \
                     error_detail, produced_by, possible_duplicate, created_at \
                     FROM messages WHERE tenant_id = $1 AND conversation_id = $2 ORDER BY seq",
                )
                .bind(tenant_id)
                .bind(conversation_id)
                .fetch_all(&mut *self.read().await?)
                .await?)
            }

            async fn unhandled(
                &self,
                tenant_id: &str,
                limit: i64,
            ) -> $crate::store::Result<Vec<$crate::store::UnhandledRecord>> {
                Ok(sqlx::query_as(
                    "SELECT id, channel_id, platform, reason, raw, received_at FROM unhandled_events \
                     WHERE tenant_id = $1 ORDER BY received_at DESC, id DESC LIMIT $2",
                )
                .bind(tenant_id)
                .bind(limit)
                .fetch_all(&mut *self.read().await?)
                .await?)
            }

            async fn add_document(&self, d: &$crate::store::NewDocument) -> $crate::store::Result<()> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                sqlx::query(
                    "INSERT INTO knowledge_documents (id, tenant_id, title, url, text, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&d.id)
                .bind(&d.tenant_id)
                .bind(&d.title)
                .bind(&d.url)
                .bind(&d.text)
                .bind(d.created_at)
                .execute(&mut *tx)
                .await?;
                for (i, passage) in d.passages.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO knowledge_passages (tenant_id, document_id, ord, text) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&d.tenant_id)
                    .bind(&d.id)
                    .bind(i as i64)
                    .bind(passage)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn search_passages(
                &self,
                tenant_id: &str,
                terms: &[String],
                limit: i64,
            ) -> $crate::store::Result<Vec<$crate::store::Passage>> {
                if terms.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(sqlx::query_as(Self::SEARCH_SQL)
                    .bind(Self::fts_query(terms))
                    .bind(tenant_id)
                    .bind(limit)
                    .fetch_all(&mut *self.read().await?)
                    .await?)
            }

            // -- Meta messaging (Messenger, Instagram) ------------------------------------
            async fn outbox_sending(&self, channel_id: &str, recipient: &str) -> $crate::store::Result<bool> {
                let found: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM outbox WHERE channel_id = $1 AND recipient = $2 AND state = 'sending' LIMIT 1",
                )
                .bind(channel_id)
                .bind(recipient)
                .fetch_optional(&mut *self.read().await?)
                .await?;
                Ok(found.is_some())
            }

            async fn last_customer_message_at(
                &self,
                tenant_id: &str,
                conversation_id: &str,
            ) -> $crate::store::Result<Option<i64>> {
                Ok(sqlx::query_scalar(
                    "SELECT MAX(COALESCE(platform_ts, created_at)) FROM messages \
                     WHERE tenant_id = $1 AND conversation_id = $2 AND direction = 'inbound' AND author = 'customer'",
                )
                .bind(tenant_id)
                .bind(conversation_id)
                .fetch_one(&mut *self.read().await?)
                .await?)
            }

            // -- Meta data-deletion callback ------------------------------------------------
            async fn create_deletion_request(&self, r: &$crate::store::DeletionRequest) -> $crate::store::Result<()> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                sqlx::query(
                    "INSERT INTO data_deletion_requests (code, channel_id, subject, status, erased_contacts, \
                     requested_at, completed_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&r.code)
                .bind(&r.channel_id)
                .bind(&r.subject)
                .bind(&r.status)
                .bind(r.erased_contacts)
                .bind(r.requested_at)
                .bind(r.completed_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn deletion_request(&self, code: &str) -> $crate::store::Result<Option<$crate::store::DeletionRequest>> {
                Ok(sqlx::query_as(
                    "SELECT code, channel_id, subject, status, erased_contacts, requested_at, completed_at \
                     FROM data_deletion_requests WHERE code = $1",
                )
                .bind(code)
                .fetch_optional(&mut *self.read().await?)
                .await?)
            }

            async fn complete_deletion_request(&self, code: &str, erased: i64, at: i64) -> $crate::store::Result<()> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                sqlx::query(
                    "UPDATE data_deletion_requests SET status = 'completed', subject = NULL, \
                     erased_contacts = $2, completed_at = $3 WHERE code = $1",
                )
                .bind(code)
                .bind(erased)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn pending_deletion_requests(&self, limit: i64) -> $crate::store::Result<Vec<$crate::store::DeletionRequest>> {
                Ok(sqlx::query_as(
                    "SELECT code, channel_id, subject, status, erased_contacts, requested_at, completed_at \
                     FROM data_deletion_requests WHERE status = 'pending' ORDER BY requested_at, code LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&mut *self.read().await?)
                .await?)
            }

            async fn contacts_by_platform_user(
                &self,
                user_id: &str,
            ) -> $crate::store::Result<Vec<(String, String, String)>> {
                Ok(sqlx::query_as(
                    "SELECT i.tenant_id, i.contact_id, i.channel_id FROM contact_identities i \
                     JOIN channels c ON c.id = i.channel_id AND c.tenant_id = i.tenant_id \
                     WHERE i.external_user_id = $1 AND c.platform IN ('messenger', 'instagram')",
                )
                .bind(user_id)
                .fetch_all(&mut *self.read().await?)
                .await?)
            }

            // -- slack install and revocation ----------------------------------------------
            async fn create_install_state(&self, st: &$crate::store::NewInstallState) -> $crate::store::Result<()> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                sqlx::query(
                    "INSERT INTO slack_install_states (state_hash, tenant_id, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&st.state_hash)
                .bind(&st.tenant_id)
                .bind(st.created_at)
                .bind(st.expires_at)
                .execute(&mut *tx)
                .await?;
                // Links nobody used: swept here and on every callback.
                sqlx::query("DELETE FROM slack_install_states WHERE expires_at <= $1")
                    .bind(st.created_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn take_install_state(&self, state_hash: &str, now: i64) -> $crate::store::Result<Option<String>> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                let tenant: Option<(String, i64)> = sqlx::query_as(
                    "DELETE FROM slack_install_states WHERE state_hash = $1 RETURNING tenant_id, expires_at",
                )
                .bind(state_hash)
                .fetch_optional(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM slack_install_states WHERE expires_at <= $1")
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(tenant.filter(|(_, expires_at)| *expires_at > now).map(|(t, _)| t))
            }

            async fn replace_channel_credentials(
                &self,
                tenant_id: &str,
                channel_id: &str,
                credentials: &[u8],
            ) -> $crate::store::Result<bool> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                let done = sqlx::query(
                    "UPDATE channels SET credentials = $3, status = 'active', status_detail = NULL \
                     WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
                )
                .bind(tenant_id)
                .bind(channel_id)
                .bind(credentials)
                .execute(&mut *tx)
                .await?;
                // Consent the platform's revocation withdrew comes back with the
                // install, for people whose current state is that withdrawal (not a
                // STOP of their own).
                if done.rows_affected() == 1 {
                    sqlx::query(
                        "INSERT INTO consent_events (id, tenant_id, contact_id, purpose, granted, source, detail, at) \
                         SELECT $1 || ':' || i.contact_id, i.tenant_id, i.contact_id, 'ai_processing', TRUE, \
                         'platform', 'app_installed', $4 FROM contact_identities i \
                         WHERE i.tenant_id = $2 AND i.channel_id = $3 \
                         AND (SELECT c.detail FROM consent_events c WHERE c.tenant_id = i.tenant_id \
                              AND c.contact_id = i.contact_id AND c.purpose = 'ai_processing' \
                              ORDER BY c.at DESC, c.id DESC LIMIT 1) IN ('app_uninstalled', 'tokens_revoked') \
                         GROUP BY i.tenant_id, i.contact_id",
                    )
                    .bind($crate::store::new_id())
                    .bind(tenant_id)
                    .bind(channel_id)
                    .bind($crate::store::now_ms())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn revoke_channel(&self, r: &$crate::store::ChannelRevocation) -> $crate::store::Result<bool> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                let fresh = sqlx::query(
                    "INSERT INTO channel_revocations (channel_id, event_id, tenant_id, kind, received_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (channel_id, event_id) DO NOTHING",
                )
                .bind(&r.channel_id)
                .bind(&r.event_id)
                .bind(&r.tenant_id)
                .bind(&r.kind)
                .bind(r.at)
                .execute(&mut *tx)
                .await?;
                if fresh.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                sqlx::query(
                    "UPDATE channels SET credentials = $3, status = 'revoked', status_detail = $4 \
                     WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
                )
                .bind(&r.tenant_id)
                .bind(&r.channel_id)
                .bind(&r.credentials)
                .bind(&r.detail)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE messages SET status = 'failed', error_detail = $3 \
                     WHERE tenant_id = $1 AND status = 'queued' AND id IN (SELECT message_id FROM outbox \
                     WHERE tenant_id = $1 AND channel_id = $2 AND state IN ('pending', 'sending'))",
                )
                .bind(&r.tenant_id)
                .bind(&r.channel_id)
                .bind(&r.detail)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE outbox SET state = 'failed', error_detail = $3, text = '', \
                     lease_owner = NULL, lease_until = NULL \
                     WHERE tenant_id = $1 AND channel_id = $2 AND state IN ('pending', 'sending')",
                )
                .bind(&r.tenant_id)
                .bind(&r.channel_id)
                .bind(&r.detail)
                .execute(&mut *tx)
                .await?;
                // The platform signal feeds the consent ledger: no AI processing for
                // the people of this installation (undone by a re-install).
                sqlx::query(
                    "INSERT INTO consent_events (id, tenant_id, contact_id, purpose, granted, source, detail, at) \
                     SELECT $1 || ':' || i.contact_id, i.tenant_id, i.contact_id, 'ai_processing', FALSE, \
                     'platform', $4, $5 FROM contact_identities i \
                     WHERE i.tenant_id = $2 AND i.channel_id = $3 GROUP BY i.tenant_id, i.contact_id",
                )
                .bind($crate::store::new_id())
                .bind(&r.tenant_id)
                .bind(&r.channel_id)
                .bind(&r.kind)
                .bind(r.at)
                .execute(&mut *tx)
                .await?;
                Self::audit_in(&mut tx, &r.audit).await?;
                tx.commit().await?;
                Ok(true)
            }
        }
    };
}

pub(crate) use shared_store;

/// An ingress group's rows, table by table, in the group's order (each backend's
/// `write_ingress` stores them in one transaction).
pub(crate) struct IngressRows<'a> {
    pub(crate) events: Vec<&'a super::NewInboxEvent>,
    pub(crate) unhandled: Vec<&'a super::NewUnhandled>,
    pub(crate) envelopes: Vec<&'a super::NewEnvelope>,
}

impl<'a> IngressRows<'a> {
    pub(crate) fn of(batches: &'a [super::IngressBatch]) -> Self {
        Self {
            events: batches.iter().flat_map(|b| &b.events).collect(),
            unhandled: batches.iter().flat_map(|b| &b.unhandled).collect(),
            envelopes: batches.iter().flat_map(|b| &b.envelopes).collect(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty() && self.unhandled.is_empty() && self.envelopes.is_empty()
    }
}

/// Decides from a transaction's rows whether it commits (see `run_transaction`).
pub(crate) type Keep<'k, Row> = &'k (dyn Fn(&[Row]) -> bool + Sync);

/// A batch of waiting writes being made (see `made_together`).
pub(crate) type Making<'c> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'c>>;

/// A write waiting for the writer, and where its result goes.
pub(crate) type Waiting<T, R> = (T, tokio::sync::oneshot::Sender<super::Result<R>>);

/// Background writes waiting for a backend's single writer, made together by
/// whoever gets it next (see `complete_inbox`, `finish_send`, `resolve_conversation`).
#[derive(Default)]
pub(crate) struct PendingWrites {
    pub(crate) completions: std::sync::Mutex<Vec<Waiting<super::Completion, super::Completed>>>,
    pub(crate) sent: std::sync::Mutex<Vec<Waiting<SentPart, bool>>>,
    pub(crate) resolves: std::sync::Mutex<Vec<Waiting<NewConversation, super::ConversationRef>>>,
}

/// Background writes made in one turn of the single writer, at most: a turn is one
/// transaction, and webhook acknowledgements wait for the turn under way to end
/// (fifteen completions held the writer for 7 ms under load; the rest of the queue
/// goes in the next turns, after any acknowledgements waiting by then).
pub(crate) const MAX_TOGETHER: usize = 8;

/// Takes the oldest writes waiting in `queue`, up to [`MAX_TOGETHER`].
pub(crate) fn take_oldest<T>(queue: &std::sync::Mutex<Vec<T>>) -> Vec<T> {
    let mut waiting = lock(queue);
    let n = waiting.len().min(MAX_TOGETHER);
    waiting.drain(..n).collect()
}

/// A conversation not stored yet, with the ids its rows get if they are created.
pub(crate) struct NewConversation {
    pub(crate) key: super::ConversationKey,
    pub(crate) contact_id: String,
    pub(crate) identity_id: String,
    pub(crate) conversation_id: String,
}

/// A reply part the platform accepted.
pub(crate) struct SentPart {
    pub(crate) outbox_id: i64,
    pub(crate) owner: String,
    pub(crate) external_id: String,
    pub(crate) at: i64,
}

/// Locks a queue of waiting writes (a panic elsewhere leaves the queue usable).
pub(crate) fn lock<T>(queue: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The error of a write whose batch was dropped before it answered (its writer was
/// cut off); whether it was made is unknown, as with a lost connection.
pub(crate) fn abandoned() -> super::StoreError {
    sqlx::Error::Protocol("the write's batch was dropped before it finished".into()).into()
}

/// Statements that run one after another, sent to the database in as few calls as
/// the backend takes. SQLite runs a text of several statements in one call, which is
/// one hand-off to the connection's thread instead of one per statement (under load
/// those hand-offs, not SQLite's work, are most of a small transaction's time);
/// Postgres's extended protocol takes one statement per query, so there each
/// statement stays a call of its own. Statements are written with `$1`, `$2`…
/// placeholders as everywhere else; merged ones are renumbered to follow the
/// statements before them. Rows returned by any statement are returned by
/// [`run_script`](shared_store) in order.
pub(crate) struct Script<'q, DB: sqlx::Database> {
    merge: bool,
    parts: Vec<(String, DB::Arguments<'q>)>,
    /// Parameters taken by the statements already in the last part.
    base: usize,
    /// The last statement's highest placeholder, and the values bound to it so far.
    wanted: usize,
    bound: usize,
    /// Where the last part ends in a chain of [`Self::push_chained`] statements
    /// (one statement per call): the offset of its main statement, and the tables
    /// its statements write, in order.
    chain: Option<(usize, Vec<String>)>,
    error: Option<sqlx::error::BoxDynError>,
}

impl<'q, DB: sqlx::Database> Script<'q, DB> {
    /// `merge`: the backend runs several statements in one call.
    pub(crate) fn new(merge: bool) -> Self {
        Self {
            merge,
            parts: Vec::new(),
            base: 0,
            wanted: 0,
            bound: 0,
            chain: None,
            error: None,
        }
    }

    /// Records a statement that was given fewer or more values than it has
    /// placeholders: merged, its values would shift onto the next statement's.
    fn check_bound(&mut self) {
        if self.bound != self.wanted {
            let message = format!(
                "statement bound {} values for {} placeholders",
                self.bound, self.wanted
            );
            self.error.get_or_insert(message.into());
        }
    }

    /// Adds a statement; its values follow with [`Self::bind`], in placeholder order.
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.check_bound();
        self.chain = None;
        let (text, base) = match self.parts.last_mut() {
            Some((text, _)) if self.merge => {
                text.push_str(";\n");
                (text, self.base)
            }
            _ => {
                self.parts.push((String::new(), DB::Arguments::default()));
                let Some((text, _)) = self.parts.last_mut() else {
                    unreachable!("a part was just pushed")
                };
                (text, 0)
            }
        };
        let highest = renumbered(text, base, sql);
        self.appended(base, highest)
    }

    /// Adds an `INSERT INTO table` or `UPDATE table` that may run in one statement
    /// with the `push_chained` statements right before it: it reads nothing they
    /// write, nor writes what they read. Where the backend takes one statement per
    /// call (Postgres), consecutive ones become one statement, the earlier ones as
    /// data-modifying `WITH` queries: one call instead of one each. Their order
    /// within that statement is not defined, so a chain holds one statement per
    /// table (a second insert into the same table starts a new one: rows keep the
    /// order of their identities; a second update of it would not see the first's);
    /// foreign keys are checked at the statement's end, so a row may refer to one
    /// inserted beside it. Only the last statement's `RETURNING` rows come back, so
    /// one with `RETURNING` ends its chain. Elsewhere the same as [`Self::push`].
    pub(crate) fn push_chained(&mut self, sql: &str) -> &mut Self {
        let table = sql
            .strip_prefix("INSERT INTO ")
            .or_else(|| sql.strip_prefix("UPDATE "))
            .and_then(|rest| rest.split([' ', '(']).next())
            .filter(|t| !t.is_empty() && !self.merge)
            .map(str::to_string);
        let returns = sql.contains(" RETURNING ");
        let Some(table) = table else {
            return self.push(sql);
        };
        let chained = match (&mut self.chain, self.parts.last_mut()) {
            (Some((main_at, tables)), Some((text, _))) if !tables.contains(&table) => {
                let main = text.split_off(*main_at);
                let queries = tables.len() - 1;
                if queries == 0 {
                    text.push_str("WITH ");
                } else {
                    text.truncate(text.trim_end().len());
                    text.push_str(", ");
                }
                text.push_str(&format!("q{queries} AS ({main}) "));
                *main_at = text.len();
                tables.push(table.clone());
                true
            }
            _ => false,
        };
        if !chained {
            self.push(sql);
            self.chain = (!returns).then(|| (0, vec![table]));
            return self;
        }
        self.check_bound();
        if returns {
            self.chain = None;
        }
        let base = self.base;
        let Some((text, _)) = self.parts.last_mut() else {
            unreachable!("the chain's part is the last")
        };
        let highest = renumbered(text, base, sql);
        self.appended(base, highest)
    }

    /// Records a statement just appended with placeholders up to `highest` after
    /// `base`: its values come next.
    fn appended(&mut self, base: usize, highest: usize) -> &mut Self {
        self.base = base + highest;
        (self.wanted, self.bound) = (highest, 0);
        self
    }

    /// Puts `sql`, a statement without placeholders (`BEGIN`), before all others.
    pub(crate) fn begin(&mut self, sql: &str) {
        match self.parts.first_mut() {
            Some((text, _)) => text.insert_str(0, &format!("{sql};\n")),
            None => {
                self.push(sql);
            }
        }
    }

    /// The next value of the statement last pushed.
    pub(crate) fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'q + sqlx::Encode<'q, DB> + sqlx::Type<DB> + Send,
    {
        use sqlx::Arguments as _;
        self.bound += 1;
        if let Some((_, args)) = self.parts.last_mut() {
            if let Err(e) = args.add(value) {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The calls to make: each text with its values.
    pub(crate) fn into_parts(mut self) -> Result<Vec<(String, DB::Arguments<'q>)>, sqlx::Error> {
        self.check_bound();
        match self.error {
            Some(e) => Err(sqlx::Error::Encode(e)),
            None => Ok(self.parts),
        }
    }
}

/// Appends `sql` to `text` with its placeholders `$N` numbered after `base`; returns
/// its highest `N`.
fn renumbered(text: &mut String, base: usize, sql: &str) -> usize {
    let mut highest = 0;
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let number: usize = rest[at + 1..at + 1 + digits].parse().unwrap_or(0);
        if number == 0 {
            text.push('$');
            rest = &rest[at + 1..];
            continue;
        }
        highest = highest.max(number);
        text.push('$');
        text.push_str(&(base + number).to_string());
        rest = &rest[at + 1 + digits..];
    }
    text.push_str(rest);
    highest
}

/// The conditions under which the outbox part `o` of `conversation` (an SQL
/// expression: `o.conversation_id`, or a parameter bound to the same id) may go out
/// now, as the outbox claim and a completion's hand-off both require: its channel `c`
/// is active and no earlier part of its conversation is still to be sent.
///
/// Where the conversation is known, pass it as a parameter: Postgres then looks the
/// earlier parts up by conversation in `outbox_open`. Joined on `o.conversation_id`
/// it scanned the whole of that partial index instead, including the entries of every
/// part updated since the last vacuum (100-300 µs per hand-off under load, growing
/// with the time since).
macro_rules! outbox_part_may_go {
    ($conversation:literal) => {
        concat!(
            "c.status = 'active' AND NOT EXISTS (SELECT 1 FROM outbox p \
             WHERE p.conversation_id = ",
            $conversation,
            " AND p.state IN ('pending', 'sending') AND p.id < o.id)"
        )
    };
}
pub(crate) use outbox_part_may_go;

/// Whether an inbox event of the conversation of `$event` (a row of `inbox_events`),
/// other than that event, is still open: what a completion returns and the worker
/// asks again after it (`open_besides`).
macro_rules! another_event_open {
    ($event:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM inbox_events o WHERE o.conv_key = ",
            $event,
            ".conv_key AND o.state <> 'done' AND o.id <> ",
            $event,
            ".id)"
        )
    };
}
pub(crate) use another_event_open;

/// The columns of an [`OutboxItem`](super::OutboxItem), for `RETURNING`.
macro_rules! outbox_item_columns {
    () => {
        "id, tenant_id, channel_id, conversation_id, message_id, part, recipient, text, \
         reply_to, attempts, possible_duplicate, message_tag"
    };
}
pub(crate) use outbox_item_columns;

/// Statements in one text up to which its prepared copy is kept on the connection:
/// one event's completion, a sent part, a new conversation, two or three of them
/// made together. Larger texts are batches whose make-up rarely repeats.
const KEPT_STATEMENTS: usize = 24;

/// Whether the prepared copy of `sql` (statements merged by [`Script`]) is worth
/// keeping on the connection for the next time the same text runs.
pub(crate) fn worth_keeping(sql: &str) -> bool {
    sql.matches(";\n").count() < KEPT_STATEMENTS
}

/// Order of delivery statuses; `failed` is terminal.
pub(crate) fn status_rank(status: &str) -> i64 {
    match status {
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        _ => 4,
    }
}

/// A message's status from its parts' (state, delivery): failed if any part failed,
/// else the least advanced part's status.
pub(crate) fn aggregate_status(parts: &[(String, Option<String>)]) -> &'static str {
    let mut least = "read";
    for (state, delivery) in parts {
        let status = match (state.as_str(), delivery.as_deref()) {
            (_, Some("failed")) | ("failed", _) => return "failed",
            (_, Some("read")) => "read",
            (_, Some("delivered")) => "delivered",
            (_, Some(_)) | ("sent", None) => "sent",
            _ => "queued",
        };
        if status_rank_or_queued(status) < status_rank_or_queued(least) {
            least = status;
        }
    }
    least
}

fn status_rank_or_queued(status: &str) -> i64 {
    if status == "queued" {
        0
    } else {
        status_rank(status)
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Row, Sqlite};

    use super::Script;

    #[test]
    fn merged_statements_are_renumbered_after_the_ones_before() {
        let mut script = Script::<Sqlite>::new(true);
        script
            .push("UPDATE t SET a = $2 WHERE id = $1 AND b = $2")
            .bind(1i64)
            .bind("x");
        script.push("DELETE FROM t WHERE id = $1").bind(2i64);
        script.begin("BEGIN");
        let parts = script.into_parts().expect("values match placeholders");
        assert_eq!(parts.len(), 1);
        assert_eq!(
            parts[0].0,
            "BEGIN;\nUPDATE t SET a = $2 WHERE id = $1 AND b = $2;\nDELETE FROM t WHERE id = $3"
        );

        let mut separate = Script::<Sqlite>::new(false);
        separate.push("SELECT $1").bind(1i64);
        separate.push("SELECT $1, $2").bind(1i64).bind(2i64);
        let texts: Vec<String> = separate
            .into_parts()
            .expect("values match placeholders")
            .into_iter()
            .map(|(text, _)| text)
            .collect();
        assert_eq!(texts, ["SELECT $1", "SELECT $1, $2"]);
    }

    #[test]
    fn chained_writes_to_different_tables_are_one_statement() {
        let texts = |script: Script<'_, Sqlite>| -> Vec<String> {
            script
                .into_parts()
                .expect("values match placeholders")
                .into_iter()
                .map(|(text, _)| text)
                .collect()
        };
        let mut script = Script::<Sqlite>::new(false);
        script.push("UPDATE c SET n = $1").bind(1i64);
        script
            .push_chained("INSERT INTO m (a, b) VALUES ($1, $2)")
            .bind(1i64)
            .bind(2i64);
        script
            .push_chained("INSERT INTO o (a) VALUES ($1)")
            .bind(3i64);
        script
            .push_chained("INSERT INTO a VALUES ($1, $1)")
            .bind(4i64);
        // A second row of `m` in the same statement could take its identity before
        // the first: a new statement.
        script
            .push_chained("INSERT INTO m (a, b) VALUES ($1, $2)")
            .bind(5i64)
            .bind(6i64);
        script.push("UPDATE c SET n = $1").bind(7i64);
        script
            .push_chained("INSERT INTO o (a) VALUES ($1)")
            .bind(8i64);
        // An update of another table joins; one with `RETURNING` ends the chain as
        // its main statement, whose rows come back.
        script
            .push_chained("UPDATE c SET n = $2 WHERE id = $1")
            .bind(9i64)
            .bind(10i64);
        script
            .push_chained("UPDATE e SET d = 1 WHERE id = $1 RETURNING id")
            .bind(11i64);
        script
            .push_chained("INSERT INTO o (a) VALUES ($1)")
            .bind(12i64);
        // A second update of `c` would not see the first's row: a new statement.
        script.push_chained("UPDATE c SET n = $1").bind(13i64);
        script.push_chained("UPDATE c SET n = $1").bind(14i64);
        assert_eq!(
            texts(script),
            [
                "UPDATE c SET n = $1",
                "WITH q0 AS (INSERT INTO m (a, b) VALUES ($1, $2)), \
                 q1 AS (INSERT INTO o (a) VALUES ($3)) INSERT INTO a VALUES ($4, $4)",
                "INSERT INTO m (a, b) VALUES ($1, $2)",
                "UPDATE c SET n = $1",
                "WITH q0 AS (INSERT INTO o (a) VALUES ($1)), \
                 q1 AS (UPDATE c SET n = $3 WHERE id = $2) \
                 UPDATE e SET d = 1 WHERE id = $4 RETURNING id",
                "WITH q0 AS (INSERT INTO o (a) VALUES ($1)) UPDATE c SET n = $2",
                "UPDATE c SET n = $1",
            ]
        );

        // Merged scripts run in one call anyway: nothing changes.
        let mut merged = Script::<Sqlite>::new(true);
        merged.push_chained("INSERT INTO m VALUES ($1)").bind(1i64);
        merged.push_chained("INSERT INTO o VALUES ($1)").bind(2i64);
        assert_eq!(
            texts(merged),
            ["INSERT INTO m VALUES ($1);\nINSERT INTO o VALUES ($2)"]
        );

        let mut short = Script::<Sqlite>::new(false);
        short
            .push_chained("INSERT INTO m VALUES ($1, $2)")
            .bind(1i64);
        short.push_chained("INSERT INTO o VALUES ($1)").bind(2i64);
        assert!(
            short.into_parts().is_err(),
            "the first statement lacks a value"
        );
    }

    #[test]
    fn a_statement_given_the_wrong_number_of_values_is_an_error() {
        let mut script = Script::<Sqlite>::new(true);
        script.push("SELECT $1, $2").bind(1i64);
        script.push("SELECT $1").bind(2i64);
        assert!(script.into_parts().is_err());
    }

    #[tokio::test]
    async fn a_merged_script_runs_in_one_call_with_each_statements_values() {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("in-memory database");
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            .execute(&mut conn)
            .await
            .expect("table");
        let mut script = Script::<Sqlite>::new(true);
        script
            .push("INSERT INTO t (id, v) VALUES ($1, $2)")
            .bind(1i64)
            .bind("one");
        script
            .push("INSERT INTO t (id, v) VALUES ($1, $2)")
            .bind(2i64)
            .bind("two");
        script
            .push("SELECT v FROM t WHERE id >= $1 ORDER BY id")
            .bind(1i64);
        let mut rows = Vec::new();
        for (sql, args) in script.into_parts().expect("values match placeholders") {
            rows.extend(
                sqlx::query_with(&sql, args)
                    .fetch_all(&mut conn)
                    .await
                    .expect("script runs"),
            );
        }
        let values: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(values, ["one", "two"]);
    }
}
