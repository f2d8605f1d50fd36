#!/bin/sh
# kohaku-loop.sh DB TABLE N
#
# Runs KohakuVault's own statements (spec section 2.2) on table TABLE of the
# SQLite file DB, N times, through the sqlite3 CLI, the way a Python process
# using KohakuVault would beside kvaultfs: each iteration, in one CLI process
# with KohakuVault's busy timeout (.timeout 5000), upserts a key of its own
# twice (insert, then the update path), reads it back after each upsert and
# checks the bytes and that the value is a BLOB (and size = length in format
# A), then deletes the previous iteration's key and checks it is gone. Every
# statement autocommits, as KohakuVault's do. Keys and values are bound as
# X'..' BLOB literals; every 5th value is empty (a zero-length BLOB).
# Keys are kohaku-loop/TAG/I, TAG being $KOHAKU_LOOP_TAG or the shell's pid,
# and none is left when the loop ends.
#
# The table's format is told by its columns: a size column means format A.
# The file's journal mode is left as it is (KohakuVault would set WAL).
# Errors go to stderr and end the loop with exit status 1; usage errors 2.
set -eu

usage() {
	echo "usage: kohaku-loop.sh DB TABLE N" >&2
	exit 2
}
[ $# -eq 3 ] || usage
db=$1
table=$2
n=$3
case $n in '' | *[!0-9]*) usage ;; esac
case $table in '' | *[!A-Za-z0-9_]*)
	echo "kohaku-loop: table name $table is not a plain identifier" >&2
	exit 2
	;;
esac
command -v sqlite3 >/dev/null || {
	echo "kohaku-loop: the sqlite3 CLI is not installed" >&2
	exit 2
}
[ -f "$db" ] || {
	echo "kohaku-loop: $db: no such file" >&2
	exit 1
}
tag=${KOHAKU_LOOP_TAG:-$$}
case $tag in '' | *[!A-Za-z0-9_-]*)
	# Values are ASCII so that ${#v} is their length in bytes.
	echo "kohaku-loop: KOHAKU_LOOP_TAG must be letters, digits, _ or -" >&2
	exit 2
	;;
esac

fail() {
	echo "kohaku-loop: $*" >&2
	exit 1
}

# hexof STRING: the bytes of STRING as upper-case hex, as SQLite's hex() gives.
hexof() {
	printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n' | tr 'abcdef' 'ABCDEF'
}

# run: feed stdin to the sqlite3 CLI on DB, stopping at the first error.
run() {
	sqlite3 -batch -bail "$db"
}

# count|blob columns key and value|size column
cols=$(printf '.timeout 5000\nSELECT count(*), sum(name IN ('"'key', 'value'"') AND upper(type) = '"'BLOB'"'), sum(name = '"'size'"') FROM pragma_table_info('"'$table'"');\n' | run) ||
	fail "cannot read the columns of $table in $db"
case $cols in
0'|'*) fail "no table $table in $db" ;;
4'|2|1') format=A ;;
2'|2|0') format=BC ;;
*) fail "table $table in $db has no KohakuVault shape (columns, BLOB key/value, size: $cols)" ;;
esac

# upsert KEYHEX VALUEHEX LENGTH: KohakuVault's upsert for the format.
upsert() {
	if [ $format = A ]; then
		echo "INSERT INTO $table(key, value, size) VALUES (X'$1', X'$2', $3) ON CONFLICT(key) DO UPDATE SET value = excluded.value, size = excluded.size;"
	else
		echo "INSERT INTO $table(key, value) VALUES (X'$1', X'$2') ON CONFLICT(key) DO UPDATE SET value = excluded.value;"
	fi
}

# check KEYHEX: select the value the way KohakuVault reads it, with its type
# (and, in A, whether size = length(value)).
check() {
	if [ $format = A ]; then
		echo "SELECT hex(value) || ':' || typeof(value) || ':' || (size = length(value)) FROM $table WHERE key = X'$1';"
	else
		echo "SELECT hex(value) || ':' || typeof(value) || ':1' FROM $table WHERE key = X'$1';"
	fi
}

# value I VERSION: the value stored at iteration I (empty every 5th).
value() {
	k=$(($1 % 5))
	v=""
	while [ $k -gt 0 ]; do
		v="$v kohaku-loop $tag $1 v$2"
		k=$((k - 1))
	done
	printf '%s' "$v"
}

prev=""
i=0
while [ $i -lt "$n" ]; do
	key=$(hexof "kohaku-loop/$tag/$i")
	v1=$(value $i 1)
	v2=$(value $i 2)
	h1=$(hexof "$v1")
	h2=$(hexof "$v2")
	out=$({
		echo ".timeout 5000"
		echo "PRAGMA synchronous=NORMAL;"
		upsert "$key" "$h1" "${#v1}"
		check "$key"
		upsert "$key" "$h2" "${#v2}"
		check "$key"
		if [ -n "$prev" ]; then
			echo "DELETE FROM $table WHERE key = X'$prev';"
			echo "SELECT 'left:' || count(*) FROM $table WHERE key = X'$prev';"
		fi
	} | run) || fail "iteration $i: sqlite3 failed on $db"
	want="$h1:blob:1
$h2:blob:1"
	[ -n "$prev" ] && want="$want
left:0"
	[ "$out" = "$want" ] || fail "iteration $i: read back
$out
want
$want"
	prev=$key
	i=$((i + 1))
done
if [ -n "$prev" ]; then
	out=$(printf ".timeout 5000\nDELETE FROM %s WHERE key = X'%s';\nSELECT count(*) FROM %s WHERE key = X'%s';\n" "$table" "$prev" "$table" "$prev" | run) ||
		fail "final delete: sqlite3 failed on $db"
	[ "$out" = 0 ] || fail "final delete left the key"
fi
echo "kohaku-loop: $n iterations on $table (format $format) in $db: ok"
