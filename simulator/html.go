package simulator

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"image/color"
	"io"
	"math"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

//go:embed report.html.tmpl
var reportTemplate string

var reportHTML = template.Must(template.New("report").Parse(reportTemplate))

// chart is one figure of the HTML report: an inline SVG, or why there is
// none.
type chart struct {
	ID      string
	Title   string
	Caption string
	SVG     template.HTML
	Missing string
}

// htmlRow is a row of the summary table as the template sees it.
type htmlRow struct {
	Section, Label, Value, Note, Status string
}

// WriteHTML writes the report as one self-contained HTML page: the summary
// table and SVG charts inline, no script, nothing loaded from anywhere.
func (r *Report) WriteHTML(w io.Writer) error {
	rows := r.rows()
	hr := make([]htmlRow, len(rows))
	for i, rw := range rows {
		hr[i] = htmlRow{rw.section, rw.label, rw.value, rw.note, rw.status}
	}
	data := struct {
		R       *Report
		Title   string
		Verdict string
		OK      bool
		Rows    []htmlRow
		Charts  []chart
		Made    string
		JSONRef string
	}{
		R: r, Title: r.Title(), Verdict: r.Verdict(), OK: r.OK && r.Landing != nil, Rows: hr,
		Charts: r.charts(), Made: time.Now().UTC().Format("2006-01-02 15:04:05 UTC"),
	}
	var buf bytes.Buffer
	if err := reportHTML.Execute(&buf, data); err != nil {
		return fmt.Errorf("render report.html: %w", err)
	}
	_, err := buf.WriteTo(w)
	return err
}

// Colors of the charts' series.
var (
	colBlue   = color.RGBA{37, 99, 235, 255}
	colGreen  = color.RGBA{22, 163, 74, 255}
	colOrange = color.RGBA{234, 88, 12, 255}
	colPurple = color.RGBA{147, 51, 234, 255}
	colRed    = color.RGBA{220, 38, 38, 255}
	colGrid   = color.RGBA{226, 232, 240, 255}
)

type series struct {
	name  string
	color color.Color
	dash  bool
	xy    plotter.XYs
}

func (r *Report) charts() []chart {
	var out []chart
	var sent, acked, landed, refused plotter.XYs
	var p50, p90, p99, pmax plotter.XYs
	var backlog plotter.XYs
	anyRefused := false
	for _, s := range r.Series {
		sent = append(sent, plotter.XY{X: s.T, Y: float64(s.Sent)})
		acked = append(acked, plotter.XY{X: s.T, Y: float64(s.Acked)})
		landed = append(landed, plotter.XY{X: s.T, Y: float64(s.Landed)})
		refused = append(refused, plotter.XY{X: s.T, Y: float64(s.Refused + s.Errors)})
		anyRefused = anyRefused || s.Refused+s.Errors > 0
		if s.AckP50Ms > 0 {
			p50 = append(p50, plotter.XY{X: s.T, Y: s.AckP50Ms})
			p90 = append(p90, plotter.XY{X: s.T, Y: s.AckP90Ms})
			p99 = append(p99, plotter.XY{X: s.T, Y: s.AckP99Ms})
			pmax = append(pmax, plotter.XY{X: s.T, Y: s.AckMaxMs})
		}
		if s.Backlog >= 0 {
			backlog = append(backlog, plotter.XY{X: s.T, Y: float64(s.Backlog)})
		}
	}
	sendEnd := r.Send.SendS

	tp := []series{{"sent", colBlue, false, sent}}
	if r.Send.QoS0 < r.Send.Sent {
		tp = append(tp, series{"acknowledged", colGreen, false, acked})
	}
	if r.Landing != nil {
		tp = append(tp, series{"landed in PostgreSQL", colOrange, false, landed})
	}
	if anyRefused {
		tp = append(tp, series{"503s + errors (requests)", colRed, false, refused})
	}
	out = append(out, makeChart("throughput", "Throughput", "readings per second, each second of the run; the dotted line marks the end of sending",
		"readings/s", false, sendEnd, tp))

	out = append(out, makeChart("latency", "Acknowledgement latency over time",
		"percentiles of each second's acknowledgements, from the intended send time (log scale)",
		"ms", true, sendEnd, []series{
			{"max", colRed, true, pmax}, {"p99", colPurple, false, p99}, {"p90", colOrange, false, p90}, {"p50", colBlue, false, p50},
		}))

	bl := makeChart("backlog", "Backlog in Redis",
		"firehose_stream_backlog_entries summed over the shards, scraped from "+r.Config.Metrics+" each second: readings stored but not yet in PostgreSQL",
		"entries", false, sendEnd, []series{{"backlog", colPurple, false, backlog}})
	if len(backlog) == 0 {
		bl.SVG, bl.Missing = "", "No backlog: the target's metrics were not read (--metrics off, or "+orNone(r.Config.Metrics)+" did not answer with firehose_stream_backlog_entries)."
	}
	out = append(out, bl)
	out = append(out, r.histogramChart())
	return out
}

func orNone(s string) string {
	if s == "" {
		return "no URL"
	}
	return s
}

// makeChart draws a line chart over the run's seconds.
func makeChart(id, title, caption, ylabel string, logY bool, mark float64, ss []series) chart {
	c := chart{ID: id, Title: title, Caption: caption}
	p := newPlot()
	p.X.Label.Text = "seconds from start"
	p.Y.Label.Text = ylabel
	p.X.Min = 0
	ymin, ymax := math.Inf(1), math.Inf(-1)
	points := 0
	for _, s := range ss {
		for _, pt := range s.xy {
			ymin, ymax = math.Min(ymin, pt.Y), math.Max(ymax, pt.Y)
			p.X.Max = math.Max(p.X.Max, pt.X)
		}
		points += len(s.xy)
	}
	if points == 0 {
		c.Missing = "No data."
		return c
	}
	if logY {
		ymin = math.Max(ymin, 1e-3)
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Y.Min = math.Pow(10, math.Floor(math.Log10(ymin)))
		// At least 3x head room above the highest point, for the legend.
		p.Y.Max = math.Pow(10, math.Ceil(math.Log10(math.Max(ymax*3, ymin*10))))
	} else {
		// Head room for the legend, drawn at the top left.
		p.Y.Min = 0
		p.Y.Max = math.Max(ymax*1.25, 1)
	}
	if mark > 0 && mark < p.X.Max {
		l, err := plotter.NewLine(plotter.XYs{{X: mark, Y: p.Y.Min}, {X: mark, Y: p.Y.Max}})
		if err == nil {
			l.Color = color.Gray{150}
			l.Dashes = []vg.Length{vg.Points(2), vg.Points(3)}
			p.Add(l)
		}
	}
	for _, s := range ss {
		if len(s.xy) == 0 {
			continue
		}
		xy := s.xy
		if logY {
			xy = make(plotter.XYs, len(s.xy))
			for i, pt := range s.xy {
				xy[i] = plotter.XY{X: pt.X, Y: math.Max(pt.Y, p.Y.Min)}
			}
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			c.Missing = "Cannot draw: " + err.Error()
			return c
		}
		l.Color, l.Width = s.color, vg.Points(1.6)
		if s.dash {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			l.Width = vg.Points(1)
		}
		p.Add(l)
		p.Legend.Add(s.name, l)
	}
	c.SVG, c.Missing = render(p, 10*vg.Inch, 3.4*vg.Inch)
	return c
}

// histogramChart draws the distribution of the acknowledgement latencies on
// a log scale of milliseconds.
func (r *Report) histogramChart() chart {
	c := chart{ID: "histogram", Title: "Acknowledgement latency distribution",
		Caption: fmt.Sprintf("every request or publish of the run (%s), 10 bars a decade; p50 and p99 marked", count(r.AckLatency.Count))}
	var bins []plotter.HistogramBin
	var top float64
	for _, b := range r.Histogram {
		if b.FromMs <= 0 || b.ToMs <= b.FromMs {
			continue
		}
		bins = append(bins, plotter.HistogramBin{Min: b.FromMs, Max: b.ToMs, Weight: float64(b.Count)})
		top = math.Max(top, float64(b.Count))
	}
	if len(bins) == 0 {
		c.Missing = "No data: nothing was acknowledged."
		return c
	}
	p := newPlot()
	p.X.Label.Text = "latency, ms (log scale)"
	p.Y.Label.Text = "requests / publishes"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.X.Min, p.X.Max = bins[0].Min, bins[len(bins)-1].Max
	p.Y.Min, p.Y.Max = 0, top*1.25
	h := &plotter.Histogram{Bins: bins, FillColor: color.NRGBA{R: 37, G: 99, B: 235, A: 150},
		LineStyle: draw.LineStyle{Color: color.White, Width: vg.Points(0.5)}}
	p.Add(h)
	for _, m := range []struct {
		name string
		v    float64
		col  color.Color
	}{{"p50", r.AckLatency.P50Ms, colGreen}, {"p99", r.AckLatency.P99Ms, colPurple}} {
		if m.v <= 0 || m.v < p.X.Min || m.v > p.X.Max {
			continue
		}
		l, err := plotter.NewLine(plotter.XYs{{X: m.v, Y: 0}, {X: m.v, Y: p.Y.Max}})
		if err != nil {
			continue
		}
		l.Color, l.Width, l.Dashes = m.col, vg.Points(1.5), []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s %s", m.name, formatMs(m.v)), l)
	}
	c.SVG, c.Missing = render(p, 10*vg.Inch, 3.4*vg.Inch)
	return c
}

// newPlot is a plot in the report's style: sans-serif, a light grid, the
// legend at the top left.
func newPlot() *plot.Plot {
	p := plot.New()
	sans := func(f *font.Font) { f.Variant = "Sans" }
	sans(&p.Title.TextStyle.Font)
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		sans(&a.Label.TextStyle.Font)
		sans(&a.Tick.Label.Font)
		a.Label.TextStyle.Font.Size = vg.Points(11)
		a.Tick.Label.Font.Size = vg.Points(10)
		a.Color = color.Gray{120}
		a.Tick.Color = color.Gray{120}
	}
	sans(&p.Legend.TextStyle.Font)
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.XOffs = vg.Points(8)
	p.Legend.Padding = vg.Points(2)
	g := plotter.NewGrid()
	g.Vertical.Color, g.Horizontal.Color = colGrid, colGrid
	p.Add(g)
	return p
}

// render draws p as an SVG element to inline in HTML. The plot library can
// panic on data it cannot scale: that becomes a missing chart, not a crash.
func render(p *plot.Plot, w, h vg.Length) (svg template.HTML, missing string) {
	defer func() {
		if e := recover(); e != nil {
			svg, missing = "", fmt.Sprintf("Cannot draw: %v", e)
		}
	}()
	c := vgsvg.New(w, h)
	p.Draw(draw.New(c))
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return "", "Cannot draw: " + err.Error()
	}
	s := buf.String()
	// Inline in HTML: no XML prolog; fonts fall back to the reader's sans.
	if i := strings.Index(s, "<svg"); i > 0 {
		s = s[i:]
	}
	s = strings.ReplaceAll(s, "font-family:Liberation Sans;", "font-family:'Liberation Sans',Arial,Helvetica,sans-serif;")
	return template.HTML(s), "" //nolint:gosec // made here from numbers, not from input
}
