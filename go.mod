module github.com/kohakuvault/kvaultfs

go 1.26.8

require (
	github.com/mattn/go-sqlite3 v1.14.53
	golang.org/x/sys v0.50.0
)
