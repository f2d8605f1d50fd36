#!/usr/bin/env bash
# Runs every test: the vault, the file system and the end-to-end suite
# that mounts real vaults and drives them with cp, rsync, tar, ffmpeg and
# friends. The mount tests need root (or fusermount3) and /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
go test -count=1 -timeout 45m ./...
