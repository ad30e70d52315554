package config

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/agext/levenshtein"
	"github.com/hashicorp/hcl/v2"
)

// WriteDiagnostics renders diags the way HCL tools do: "Error: summary", the
// file:line:column, the source line, and the detail. With color the subject is
// highlighted; without, a line of carets under the source line marks it.
// Diagnostics are written in file order (SortDiagnostics). files are the
// parsed files, Pipeline.Files. Details are not wrapped: terminals wrap, and
// logs stay greppable.
func WriteDiagnostics(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics, color bool) error {
	for _, d := range SortDiagnostics(diags) {
		var buf bytes.Buffer
		if err := hcl.NewDiagnosticTextWriter(&buf, files, 0, color).WriteDiagnostic(d); err != nil {
			return err
		}
		out := withColumn(buf.Bytes(), d)
		if !color {
			out = addCaret(out, files, d)
		}
		if _, err := w.Write(out); err != nil {
			return fmt.Errorf("write diagnostics: %w", err)
		}
	}
	return nil
}

// withColumn turns HCL's "on FILE line N" into "on FILE:N:COL", the form
// editors and terminals jump to, so every diagnostic says file:line:column.
func withColumn(out []byte, d *hcl.Diagnostic) []byte {
	if d.Subject == nil {
		return out
	}
	from := fmt.Sprintf("  on %s line %d", d.Subject.Filename, d.Subject.Start.Line)
	to := fmt.Sprintf("  on %s:%d:%d", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
	return bytes.Replace(out, []byte(from), []byte(to), 1)
}

// addCaret puts a line of carets under the subject in the source snippet
// that HCL's writer printed, which marks the subject only with colors.
func addCaret(out []byte, files map[string]*hcl.File, d *hcl.Diagnostic) []byte {
	if d.Subject == nil {
		return out
	}
	f := files[d.Subject.Filename]
	if f == nil {
		return out
	}
	src := f.Bytes
	start, end := d.Subject.Start.Byte, d.Subject.End.Byte
	if start < 0 || start > len(src) || end < start {
		return out
	}
	lineStart := bytes.LastIndexByte(src[:start], '\n') + 1
	lineEnd := len(src)
	if i := bytes.IndexByte(src[start:], '\n'); i >= 0 {
		lineEnd = start + i
	}
	end = min(end, lineEnd)
	var caret strings.Builder
	caret.WriteString("      ") // the width of HCL's "%4d: " line number
	for _, r := range string(src[lineStart:start]) {
		if r == '\t' {
			caret.WriteRune('\t')
		} else {
			caret.WriteByte(' ')
		}
	}
	caret.WriteString(strings.Repeat("^", max(1, utf8.RuneCount(src[start:end]))))
	caret.WriteByte('\n')

	numbered := fmt.Sprintf("%4d: ", d.Subject.Start.Line)
	lines := bytes.SplitAfter(out, []byte("\n"))
	var res []byte
	inSnippet, done := false, false
	for _, l := range lines {
		res = append(res, l...)
		switch {
		case done:
		case bytes.HasPrefix(l, []byte("  on ")):
			inSnippet = true
		case inSnippet && bytes.HasPrefix(l, []byte(numbered)):
			res = append(res, caret.String()...)
			done = true
		}
	}
	return res
}

// SortDiagnostics returns diags in file order: those without a position
// first, then by file name and position. The stages report in the order they
// run; people read in the order of the file.
func SortDiagnostics(diags hcl.Diagnostics) hcl.Diagnostics {
	out := append(hcl.Diagnostics(nil), diags...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].Subject, out[j].Subject
		switch {
		case a == nil || b == nil:
			return a == nil && b != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		default:
			return a.Start.Byte < b.Start.Byte
		}
	})
	return out
}

// CompactDiagnostic renders one diagnostic on one line, in the manner of
// compilers: "FILE:LINE:COL: error: Summary: Detail". A diagnostic without a
// subject has no position. Line breaks in the detail become spaces.
func CompactDiagnostic(d *hcl.Diagnostic) string {
	var b strings.Builder
	if d.Subject != nil {
		fmt.Fprintf(&b, "%s:%d:%d: ", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
	}
	switch d.Severity {
	case hcl.DiagError:
		b.WriteString("error: ")
	case hcl.DiagWarning:
		b.WriteString("warning: ")
	default:
		b.WriteString("note: ")
	}
	b.WriteString(d.Summary)
	if d.Detail != "" {
		b.WriteString(": ")
		b.WriteString(strings.Join(strings.Fields(d.Detail), " "))
	}
	return b.String()
}

// Suggest returns the candidate closest to given when it is close enough to
// be a likely typo, or "". HCL's own suggestions use the same measure.
func Suggest(given string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := levenshtein.Distance(given, c, nil); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}
