package mount_test

import (
	"bytes"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestFFmpeg writes MP4 files straight into the mount with ffmpeg (its
// muxer seeks back to patch the header; +faststart moves the index to
// the front by rewriting the file), reads them with ffprobe, and
// extracts a frame with a seeking ffmpeg -ss. With bitexact output the
// files must equal the same commands' output in a plain directory.
func TestFFmpeg(t *testing.T) {
	ffmpeg := needTool(t, "ffmpeg", "ffmpeg")
	ffprobe := needTool(t, "ffprobe", "ffmpeg")
	m := mountFresh(t)
	plain := t.TempDir()
	quiet := []string{"-nostdin", "-hide_banner", "-loglevel", "error", "-y"}
	exact := []string{"-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1"}
	cases := []struct {
		name    string
		args    []string
		streams int
	}{
		{"plain", []string{"-f", "lavfi", "-i", "testsrc=duration=5:size=320x240:rate=25", "-c:v", "mpeg4"}, 1},
		{"faststart", []string{"-f", "lavfi", "-i", "testsrc=duration=5:size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:duration=5",
			"-c:v", "mpeg4", "-c:a", "aac", "-movflags", "+faststart"}, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, dir := range []string{m.mnt, plain} {
				args := append(append(append([]string{}, quiet...), c.args...), exact...)
				run(t, ffmpeg, append(args, filepath.Join(dir, c.name+".mp4"))...)
			}
			mp4 := m.path(c.name + ".mp4")
			got, want := readFile(t, mp4), readFile(t, filepath.Join(plain, c.name+".mp4"))
			if !bytes.Equal(got, want) {
				t.Fatalf("%s.mp4 in the mount (%d bytes) differs from the plain directory's (%d bytes) at %d", c.name, len(got), len(want), firstDiff(got, want))
			}
			if c.name == "faststart" {
				// The moov atom comes before mdat.
				if moov, mdat := bytes.Index(got, []byte("moov")), bytes.Index(got, []byte("mdat")); moov < 0 || mdat < 0 || moov > mdat {
					t.Errorf("faststart: moov at %d, mdat at %d", moov, mdat)
				}
			}

			out := run(t, ffprobe, "-v", "error", "-show_entries", "format=duration,nb_streams", "-of", "default=noprint_wrappers=1", mp4)
			fields := map[string]string{}
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				if k, v, ok := strings.Cut(l, "="); ok {
					fields[k] = v
				}
			}
			dur, err := strconv.ParseFloat(fields["duration"], 64)
			if err != nil || math.Abs(dur-5) > 0.1 {
				t.Errorf("ffprobe duration = %q, want 5", fields["duration"])
			}
			if fields["nb_streams"] != strconv.Itoa(c.streams) {
				t.Errorf("ffprobe nb_streams = %q, want %d", fields["nb_streams"], c.streams)
			}
			frames := strings.TrimSpace(run(t, ffprobe, "-v", "error", "-select_streams", "v:0", "-count_packets",
				"-show_entries", "stream=nb_read_packets,width,height", "-of", "csv=p=0", mp4))
			if frames != "320,240,125" {
				t.Errorf("video stream (width,height,packets) = %q, want 320,240,125", frames)
			}

			// A seeking read: the frame at 2s, written into the mount too.
			for _, dir := range []string{m.mnt, plain} {
				args := append(append([]string{}, quiet...), "-ss", "2", "-i", filepath.Join(dir, c.name+".mp4"), "-frames:v", "1")
				run(t, ffmpeg, append(append(args, exact...), filepath.Join(dir, c.name+"-frame.png"))...)
			}
			png := readFile(t, m.path(c.name+"-frame.png"))
			if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
				t.Fatalf("frame.png does not start with the PNG signature: %q", png[:min(len(png), 8)])
			}
			if !bytes.Equal(png, readFile(t, filepath.Join(plain, c.name+"-frame.png"))) {
				t.Errorf("the frame at 2s read from the mount differs from the one read from the plain directory")
			}
			if got := strings.TrimSpace(run(t, ffprobe, "-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0", m.path(c.name+"-frame.png"))); got != "320,240" {
				t.Errorf("frame size = %q", got)
			}
		})
	}
}
