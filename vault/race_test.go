//go:build race

package vault

// raceEnabled reports whether the tests run under the race detector,
// which makes the multi-GiB tests too slow to be useful.
const raceEnabled = true
