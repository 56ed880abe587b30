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
# Discord: the signed PING's body (an interaction), and MESSAGE_CREATE's `d` (a
# gateway message) as sent in a guild and as a direct message.
jq -j .raw_body "$fixtures/discord/interaction-ping-signed.json" | seed 005 dc-ping.json
jq -c '.raw_body | fromjson | .type = 2 | .data = {"name": "help"}' \
    "$fixtures/discord/interaction-ping-signed.json" | seed 005 dc-command.json
jq -c .d "$fixtures/discord/gateway-message-create-dispatch.json" | seed 007 dcgw-guild.json
jq -c '.d | del(.guild_id, .member)' "$fixtures/discord/gateway-message-create-dispatch.json" \
    | seed 007 dcgw-dm.json
ls "$out" | wc -l
