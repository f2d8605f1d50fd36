package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// A comparison is one row of the report: figure a beside figure b, both
// from the same repetitions, and a per repetition.
type comparison struct {
	label  string
	job    string
	a, b   string  // variants: a is the KohakuVault side, b the native one
	target float64 // minimum ratio a/b, 0 for none
	lower  bool    // lower is better (time, memory)
	growth bool    // a and b are one side's big and small value: show a-b in MiB, target under flatMiB
}

// flatMiB bounds how much more memory a streamed big value may take than
// the small one for "flat in value size".
const flatMiB = 16

// comparisons lists the report's rows; BIG and SMALL in a label are
// replaced by the sizes of the values.
var comparisons = []comparison{
	{label: "1 MiB random ReadAt of BIG, warm", job: "readat", a: "kohaku-warm", b: "native-warm", target: 0.5},
	{label: "1 MiB random ReadAt of BIG, cold", job: "readat", a: "kohaku-cold", b: "native-cold", target: 0.5},
	{label: "first ReadAt after drop_caches", job: "readat1", a: "kohaku-cold", b: "native-cold", lower: true},
	{label: "BIG streamed get (GetTo), cold", job: "get", a: "kohaku-big-cold", b: "native-big-cold"},
	{label: "BIG streamed get (GetTo), warm", job: "get", a: "kohaku-big-warm", b: "native-big-warm"},
	{label: "BIG streamed put (PutReader), to Close", job: "put", a: "kohaku-big", b: "native-big"},
	{label: "SMALL streamed get (GetTo), cold", job: "get", a: "kohaku-small-cold", b: "native-small-cold"},
	{label: "SMALL streamed get (GetTo), warm", job: "get", a: "kohaku-small-warm", b: "native-small-warm"},
	{label: "SMALL streamed put (PutReader), to Close", job: "put", a: "kohaku-small", b: "native-small"},
	{label: "peak RssAnon, BIG put", job: "rss", a: "put-kohaku-big", b: "put-native-big", lower: true},
	{label: "peak RssAnon, SMALL put", job: "rss", a: "put-kohaku-small", b: "put-native-small", lower: true},
	{label: "peak RssAnon, BIG get", job: "rss", a: "get-kohaku-big", b: "get-native-big", lower: true},
	{label: "peak RssAnon, SMALL get", job: "rss", a: "get-kohaku-small", b: "get-native-small", lower: true},
	{label: "VmHWM (mapped file included), BIG put", job: "hwm", a: "put-kohaku-big", b: "put-native-big", lower: true},
	{label: "VmHWM (mapped file included), SMALL put", job: "hwm", a: "put-kohaku-small", b: "put-native-small", lower: true},
	{label: "VmHWM (mapped file included), BIG get", job: "hwm", a: "get-kohaku-big", b: "get-native-big", lower: true},
	{label: "VmHWM (mapped file included), SMALL get", job: "hwm", a: "get-kohaku-small", b: "get-native-small", lower: true},
	{label: "RssAnon growth SMALL->BIG, put, kohaku", job: "rss", a: "put-kohaku-big", b: "put-kohaku-small", growth: true},
	{label: "RssAnon growth SMALL->BIG, get, kohaku", job: "rss", a: "get-kohaku-big", b: "get-kohaku-small", growth: true},
	{label: "RssAnon growth SMALL->BIG, put, native", job: "rss", a: "put-native-big", b: "put-native-small", growth: true},
	{label: "RssAnon growth SMALL->BIG, get, native", job: "rss", a: "get-native-big", b: "get-native-small", growth: true},
}

// results maps a job and variant to its figure per repetition.
type results struct {
	vals  map[[2]string]map[int]float64
	units map[[2]string]string
	notes []string
}

// readResults parses a results file's R and N lines.
func readResults(path string) (*results, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rs := &results{vals: map[[2]string]map[int]float64{}, units: map[[2]string]string{}}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if n, ok := strings.CutPrefix(line, "N "); ok {
			if !slices.Contains(rs.notes, n) {
				rs.notes = append(rs.notes, n)
			}
			continue
		}
		fs := strings.Fields(line)
		if len(fs) != 6 || fs[0] != "R" {
			continue
		}
		r, err1 := strconv.Atoi(fs[1])
		x, err2 := strconv.ParseFloat(fs[4], 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("%s: bad line %q: %v", path, line, err)
		}
		k := [2]string{fs[2], fs[3]}
		if rs.vals[k] == nil {
			rs.vals[k] = map[int]float64{}
		}
		rs.vals[k][r], rs.units[k] = x, fs[5]
	}
	return rs, sc.Err()
}

// report prints the comparisons found in a results file: for each, the
// median and range over the repetitions of both figures and of their
// ratio (or difference), taken per repetition.
func report(path string) error {
	rs, err := readResults(path)
	if err != nil {
		return err
	}
	header := func(a, b, rel string) {
		fmt.Printf("%-44s %-8s %-24s %-24s %-22s %s\n", "figure", "unit", a, b, rel, "target")
	}
	header("kohaku median [min-max]", "native median [min-max]", "kohaku/native")
	growthHeader := false
	for _, c := range comparisons {
		ak, bk := [2]string{c.job, c.a}, [2]string{c.job, c.b}
		if rs.vals[ak] == nil {
			continue // the job or variant was not run
		}
		var as, bs, rel []float64
		for r, x := range rs.vals[ak] {
			as = append(as, x)
			if y, ok := rs.vals[bk][r]; ok {
				if c.growth {
					rel = append(rel, x-y)
				} else if y > 0 {
					rel = append(rel, x/y)
				}
			}
		}
		for _, y := range rs.vals[bk] {
			bs = append(bs, y)
		}
		label := strings.NewReplacer("BIG", sizeLabel("big"), "SMALL", sizeLabel("small")).Replace(c.label)
		aCol, bCol, relCol, target := stat(as), stat(bs), stat(rel), ""
		switch {
		case c.growth:
			// These rows compare one side with itself.
			if !growthHeader {
				fmt.Println()
				header("big value median [min-max]", "small value median", "big - small (MiB)")
				growthHeader = true
			}
			target = fmt.Sprintf("< %d MiB (flat)", flatMiB)
			if len(rel) > 0 && median(rel) >= flatMiB {
				target += " (missed)"
			}
		case c.target > 0:
			target = fmt.Sprintf(">= %.1fx", c.target)
			if len(rel) > 0 && median(rel) < c.target {
				target += " (missed)"
			}
		case c.lower:
			target = "(lower is better)"
		}
		fmt.Printf("%-44s %-8s %-24s %-24s %-22s %s\n", label, rs.units[ak], aCol, bCol, relCol, target)
	}
	for _, n := range rs.notes {
		fmt.Println("note:", n)
	}
	return nil
}

// sizeLabel names the size of the big or small value in MB.
func sizeLabel(size string) string {
	n, _ := valueSize(size)
	return strconv.FormatFloat(float64(n)/1e6, 'f', -1, 64) + " MB"
}

// stat is "median [min-max]" of xs, or the one figure, or "-".
func stat(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	med := median(xs)
	if len(xs) == 1 {
		return num(med)
	}
	return fmt.Sprintf("%s [%s-%s]", num(med), num(xs[0]), num(xs[len(xs)-1]))
}

// median sorts xs and returns its median.
func median(xs []float64) float64 {
	slices.Sort(xs)
	if len(xs)%2 == 0 {
		return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return xs[len(xs)/2]
}

// num prints a figure with three significant digits, or whole above 1000.
func num(x float64) string {
	if x >= 1000 || x <= -1000 {
		return strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strconv.FormatFloat(x, 'g', 3, 64)
}
