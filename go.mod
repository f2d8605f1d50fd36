module github.com/kohakuvault/kvaultfs

go 1.26.8

require (
	github.com/mattn/go-sqlite3 v1.14.53
	golang.org/x/sys v0.50.0
)

require (
	github.com/cpuguy83/go-md2man/v2 v2.0.7 // indirect
	github.com/hanwen/go-fuse/v2 v2.12.1
	github.com/russross/blackfriday/v2 v2.1.0 // indirect
	github.com/urfave/cli/v2 v2.27.7
	github.com/xrash/smetrics v0.0.0-20240521201337-686a1a2994c1 // indirect
)
