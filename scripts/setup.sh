#!/usr/bin/env bash
# Installs what kvaultfs and its tests need on a Debian machine with Go:
# the FUSE tools, and the programs the end-to-end tests drive. Safe to run
# again; needs root (or sudo) only for apt.
set -euo pipefail

packages=(fuse3 ffmpeg rsync attr fio sqlite3 strace util-linux e2fsprogs)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
go mod download
