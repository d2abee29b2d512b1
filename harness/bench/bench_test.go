package bench

import (
	"context"
	"encoding/xml"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/idem"
)

func TestMedianAndPairedRatio(t *testing.T) {
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median odd = %v, want 2", got)
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median even = %v, want 2.5", got)
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is not NaN")
	}
	// Side by side: the ratio of each pair, then the median.
	if got := pairedRatio([]float64{10, 20, 90}, []float64{20, 20, 100}); got != 0.9 {
		t.Errorf("pairedRatio = %v, want 0.9", got)
	}
	// Unequal counts: the ratio of the medians.
	if got := pairedRatio([]float64{10, 30}, []float64{40}); got != 0.5 {
		t.Errorf("pairedRatio unequal = %v, want 0.5", got)
	}
}

func TestRampSeconds(t *testing.T) {
	for _, c := range []struct{ ops, want float64 }{
		{500, 1},
		{150_000, 300},           // five minutes at 500/s
		{150_000 + 225_000, 600}, // then five at 750/s
		{150_000 + 112_500, 450}, // half of the second step
	} {
		if got := rampSeconds(c.ops, 10_000); math.Abs(got-c.want) > 1e-6 {
			t.Errorf("rampSeconds(%v) = %v, want %v", c.ops, got, c.want)
		}
	}
	if got := rampSeconds(20_000_000, 10_000); got <= 0 || math.IsInf(got, 0) {
		t.Errorf("rampSeconds(20M) = %v", got)
	}
}

func TestBarChartIsWellFormedSVG(t *testing.T) {
	svg := barChart("t <&>", []string{"10k records", "100k records"}, [][]bar{
		{{"a", 1000}, {"b", 500}, {"c", math.NaN()}, {"d", 0}},
		{{"a", 2000}, {"b", 1500}, {"c", 1400}, {"d", math.NaN()}},
	}, 0.7)
	dec := xml.NewDecoder(strings.NewReader(svg))
	rects := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatalf("not well-formed: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	// Background + 5 measured bars + 4 legend swatches.
	if rects != 10 {
		t.Errorf("%d rects, want 10", rects)
	}
	if thousands(1234567) != "1,234,567" || thousands(12) != "12" {
		t.Errorf("thousands: %q %q", thousands(1234567), thousands(12))
	}
	if niceCeil(1234) != 2000 || niceCeil(0.3) != 0.5 {
		t.Errorf("niceCeil: %v %v", niceCeil(1234), niceCeil(0.3))
	}
}

// results builds a benchmark's results without running one.
func results() *Results {
	run := func(mode string, n, rep int, secs float64, rss int64) Run {
		return Run{
			Mode: mode, Rep: rep, Records: n, Imported: n, Chunks: n / 500,
			Elapsed: time.Duration(secs * float64(time.Second)), Planned: time.Second, FirstImport: 1500 * time.Millisecond,
			PeakRSS: rss,
			Stats: Stats{Counts: map[string]Counts{
				config.Importer + "/" + First: {Deliveries: int64(n / 500), Reads: int64(n), Writes: int64(2 * n), RPCs: int64(n / 50), Busy: time.Second},
			}},
		}
	}
	dup := run(ModeDuplicates, 10_000, 1, 2.5, 70e6)
	dup.Stats.Counts[config.Importer+"/"+Repeat] = Counts{Deliveries: 20, Reads: 20, Writes: 20, RPCs: 60, RPCErrors: map[string]int64{"AlreadyExists": 20}}
	return &Results{
		Started: time.Unix(0, 0), Finished: time.Unix(300, 0),
		Options: Options{Out: "bench", Sizes: []int{10_000, 100_000}, Reps: 2, RepsUpTo: 10_000, Concurrency: 8, WarmUp: 20_000},
		Ceiling: []Ceiling{
			{Records: 10_000, Rep: 1, Strategy: "s", Docs: 20_000, Elapsed: time.Second},
			{Records: 10_000, Rep: 1, Strategy: "t", Docs: 20_000, Elapsed: 2 * time.Second},
			{Records: 10_000, Rep: 2, Strategy: "s", Docs: 20_000, Elapsed: time.Second},
			{Records: 100_000, Rep: 1, Strategy: "s", Docs: 200_000, Elapsed: 10 * time.Second},
		},
		Runs: []Run{
			run(ModeGuarded, 10_000, 1, 2, 60e6), run(ModeUnguarded, 10_000, 1, 2, 60e6),
			run(ModeUnguarded, 10_000, 2, 1.6, 60e6), run(ModeGuarded, 10_000, 2, 2, 60e6),
			run(ModeGuarded, 100_000, 1, 20, 66e6), run(ModeUnguarded, 100_000, 1, 19, 66e6),
			dup,
		},
	}
}

func TestHeadline(t *testing.T) {
	h := results().Headline()
	if len(h.Sizes) != 2 || h.Sizes[0] != 10_000 || h.Sizes[1] != 100_000 {
		t.Fatalf("sizes %v", h.Sizes)
	}
	// 10k: 5,000 records/s against a ceiling of 10,000, in both repetitions.
	if h.PipelineVsCeiling[0] != 0.5 || h.PipelineVsCeiling[1] != 0.5 {
		t.Errorf("pipeline vs ceiling %v, want [0.5 0.5]", h.PipelineVsCeiling)
	}
	// Repetition 1: 1.0; repetition 2: 1.6 / 2 = 0.8; the median of two is 0.9.
	if math.Abs(h.GuardedVsUnguarded[0]-0.9) > 1e-9 {
		t.Errorf("guarded vs unguarded %v, want 0.9", h.GuardedVsUnguarded[0])
	}
	if h.Duplicates != 20 || h.DuplicateOps != 2 || h.DuplicateRPCs != 3 || h.DuplicateSource != 0 {
		t.Errorf("duplicates: %+v", h)
	}
	if h.TimeRatio != 10 || h.RSSLarge/h.RSSSmall != 1.1 {
		t.Errorf("time ratio %v, memory %v", h.TimeRatio, h.RSSLarge/h.RSSSmall)
	}
	for _, row := range h.goalRows() {
		if strings.Contains(row[0], "Guarded ÷ unguarded, 10k") && row[3] != "met" {
			t.Errorf("row %v", row)
		}
		if strings.Contains(row[0], "Pipeline ÷ raw ceiling") && row[3] != "**missed**" {
			t.Errorf("row %v", row)
		}
	}
}

func TestWriteReport(t *testing.T) {
	res := results()
	res.Options.Out = t.TempDir()
	if err := WriteReport(res); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{ReportFile, ChartFile, ResultsFile} {
		if _, err := os.Stat(filepath.Join(res.Options.Out, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	md, err := os.ReadFile(filepath.Join(res.Options.Out, ReportFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Headline", "## Production projection", "## Closing note", "![records/s by dataset size](throughput.svg)", "| duplicates | 10k |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("REPORT.md lacks %q", want)
		}
	}
	if strings.Contains(string(md), "%!") {
		t.Errorf("REPORT.md has a formatting error:\n%s", md)
	}
}

func TestMeterAttributesDeliveries(t *testing.T) {
	m := newMeter(false)
	var seen []string
	h := m.wrap(config.Importer, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, keyOf(r.Context()))
		m.update(keyOf(r.Context()), func(c *Counts) { c.SourceCalls++ })
	}))
	for range 3 {
		r := httptest.NewRequest(http.MethodPost, "/Importer", nil)
		r.Header.Set("Ce-Id", "m1")
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	want := []string{"Importer/first", "Importer/repeat", "Importer/repeat"}
	if strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Errorf("keys %v, want %v", seen, want)
	}
	st := m.snapshot()
	if st.Counts["Importer/first"].Deliveries != 1 || st.Counts["Importer/repeat"].Deliveries != 2 || st.Class(Repeat).SourceCalls != 2 {
		t.Errorf("counts %+v", st.Counts)
	}
	if st.FirstImport.IsZero() {
		t.Error("first import not recorded")
	}
	if keyOf(context.Background()) != "other" {
		t.Error("an untagged call is not attributed to other")
	}
}

func TestUnguardedClaimsAlways(t *testing.T) {
	u := Unguarded{Lease: time.Minute}
	k := idem.Key{Scope: "chunk", ID: "j~000001"}
	for range 2 {
		l, err := u.Claim(context.Background(), k, "o", nil)
		if err != nil || l.Key != k || l.Attempt != 1 {
			t.Fatalf("claim: %+v, %v", l, err)
		}
		if err := u.Complete(context.Background(), l); err != nil {
			t.Fatal(err)
		}
	}
}
