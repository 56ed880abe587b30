#!/bin/sh
# Seeds corpus/normalize with the real payloads in channels/tests/fixtures: the first
# byte of each file picks the normalizer (see fuzz_targets/normalize.rs). Needs jq.
set -eu
cd "$(dirname "$0")"
fixtures=../channels/tests/fixtures
out=corpus/normalize
mkdir -p "$out"
seed() { # selector-byte-in-octal name < body
    { printf "\\$1"; cat; } > "$out/$2"
}
for f in "$fixtures"/whatsapp/*.json; do seed 000 "wa-$(basename "$f")" < "$f"; done
for f in "$fixtures"/messenger/*.json; do seed 001 "ms-$(basename "$f")" < "$f"; done
for f in "$fixtures"/instagram/*.json; do seed 002 "ig-$(basename "$f")" < "$f"; done
for f in "$fixtures"/slack/*.json; do seed 003 "sl-$(basename "$f")" < "$f"; done
for f in "$fixtures"/telegram/*.json; do
    seed 004 "tg-$(basename "$f")" < "$f"
    seed 006 "tgbot-$(basename "$f")" < "$f"
done
# Telegram shapes the fixtures lack (as channels/tests/props.rs builds them): media,
# a group command, an edit, a block.
user='"from": {"id": 9, "is_bot": false, "first_name": "Ann"}'
private='"chat": {"id": 9, "first_name": "Ann", "type": "private"}'
group='"chat": {"id": -100123, "title": "Fans", "type": "supergroup"}'
for update in \
    "photo|{\"update_id\": 24, \"message\": {\"message_id\": 5, $user, $private, \"date\": 1700000000, \"caption\": \"look\", \"photo\": [{\"file_id\": \"s\", \"file_unique_id\": \"us\", \"width\": 90, \"height\": 90}, {\"file_id\": \"b\", \"file_unique_id\": \"ub\", \"width\": 800, \"height\": 800}]}}" \
    "command|{\"update_id\": 20, \"message\": {\"message_id\": 5, $user, $group, \"date\": 1700000000, \"text\": \"/help@shop_bot now\", \"entities\": [{\"type\": \"bot_command\", \"offset\": 0, \"length\": 14}]}}" \
    "edit|{\"update_id\": 32, \"edited_message\": {\"message_id\": 5, $user, $private, \"date\": 1700000000, \"edit_date\": 1700000100, \"text\": \"new\"}}" \
    "blocked|{\"update_id\": 33, \"my_chat_member\": {$private, $user, \"date\": 1700000000, \"old_chat_member\": {\"user\": {\"id\": 7001, \"is_bot\": true, \"first_name\": \"Shop\"}, \"status\": \"member\"}, \"new_chat_member\": {\"user\": {\"id\": 7001, \"is_bot\": true, \"first_name\": \"Shop\"}, \"status\": \"kicked\", \"until_date\": 0}}}"
do
    name=${update%%|*}
    printf '%s' "${update#*|}" | seed 004 "tg-$name.json"
    printf '%s' "${update#*|}" | seed 006 "tgbot-$name.json"
done
# Discord: the signed PING's body (an interaction), and MESSAGE_CREATE's `d` (a
# gateway message) as sent in a guild and as a direct message.
jq -j .raw_body "$fixtures/discord/interaction-ping-signed.json" | seed 005 dc-ping.json
jq -c '.raw_body | fromjson | .type = 2 | .data = {"name": "help"}' \
    "$fixtures/discord/interaction-ping-signed.json" | seed 005 dc-command.json
jq -c .d "$fixtures/discord/gateway-message-create-dispatch.json" | seed 007 dcgw-guild.json
jq -c '.d | del(.guild_id, .member)' "$fixtures/discord/gateway-message-create-dispatch.json" \
    | seed 007 dcgw-dm.json
ls "$out" | wc -l
