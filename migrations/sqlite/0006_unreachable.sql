-- A person who blocked the bot (Telegram `my_chat_member` kicked, or a send answered
-- "bot was blocked"): nothing more is sent to this identity until it is cleared.
ALTER TABLE contact_identities ADD COLUMN unreachable_at INTEGER;
