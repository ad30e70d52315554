package config

import (
	"strconv"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// RangeAt returns the range in the pipeline file of the character at line and
// column (1-based, counted in characters) of the expression's source, Src.
// Escapes in a quoted string (\", \u00e9, $${) are accounted for, and so are
// the lines of a heredoc. When the value is not one literal string (it was
// built with ${ } or a function, or written in JSON syntax) the whole
// attribute expression's range is returned. files are the parsed files,
// Pipeline.Files.
func (e *Expr) RangeAt(files map[string]*hcl.File, line, column int) hcl.Range {
	whole := e.Range
	te, ok := e.expr.(*hclsyntax.TemplateExpr)
	if !ok || len(te.Parts) == 0 {
		return whole
	}
	f := files[whole.Filename]
	if f == nil {
		return whole
	}
	src := f.Bytes
	start := te.SrcRange.Start.Byte
	if start < 0 || start >= len(src) {
		return whole
	}
	quoted := src[start] == '"'

	// The offset of the character in the value.
	k, ok := valueOffset(e.Src, line, column)
	if !ok {
		return whole
	}
	// Find the literal part that holds it.
	total := 0
	for i, part := range te.Parts {
		lit, ok := part.(*hclsyntax.LiteralValueExpr)
		if !ok || !lit.Val.IsKnown() || lit.Val.IsNull() || lit.Val.Type() != cty.String {
			return whole
		}
		n := len(lit.Val.AsString())
		if k < total+n || (i == len(te.Parts)-1 && k == total+n) {
			r, ok := walkLiteral(src, lit.SrcRange, quoted, k-total)
			if !ok {
				return whole
			}
			return r
		}
		total += n
	}
	return whole
}

// valueOffset turns a 1-based line and column, counted in characters, into
// a byte offset in s. The column may point just past the end of its line.
func valueOffset(s string, line, column int) (int, bool) {
	if line < 1 {
		line = 1
	}
	if column < 1 {
		column = 1
	}
	i := 0
	for l := 1; l < line; l++ {
		for i < len(s) && s[i] != '\n' {
			i++
		}
		if i == len(s) {
			return 0, false
		}
		i++
	}
	for c := 1; c < column; c++ {
		if i >= len(s) || s[i] == '\n' {
			break
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return i, true
}

// walkLiteral finds where value byte k of a string literal is in the source:
// it steps through the literal's source one written character (or escape) at
// a time, counting the value bytes each stands for. The returned range covers
// that written character.
func walkLiteral(src []byte, rng hcl.Range, quoted bool, k int) (hcl.Range, bool) {
	end := rng.End.Byte
	if rng.Start.Byte < 0 || end > len(src) || rng.Start.Byte > end {
		return hcl.Range{}, false
	}
	pos := rng.Start
	consumed := 0
	for pos.Byte < end {
		srcLen, valLen := unit(src[pos.Byte:end], quoted)
		if consumed+valLen > k {
			break
		}
		consumed += valLen
		pos = advance(src, pos, srcLen)
	}
	r := hcl.Range{Filename: rng.Filename, Start: pos, End: pos}
	if pos.Byte < end && src[pos.Byte] != '\n' {
		srcLen, _ := unit(src[pos.Byte:end], quoted)
		r.End = advance(src, pos, srcLen)
	}
	return r, true
}

// unit measures the written character at the start of b: how many source
// bytes it takes and how many bytes it stands for in the value.
func unit(b []byte, quoted bool) (srcLen, valLen int) {
	if quoted && len(b) >= 2 && b[0] == '\\' {
		switch b[1] {
		case 'u':
			if len(b) >= 6 {
				return 6, hexRuneLen(b[2:6])
			}
		case 'U':
			if len(b) >= 10 {
				return 10, hexRuneLen(b[2:10])
			}
		default:
			return 2, 1
		}
	}
	if len(b) >= 3 && (b[0] == '$' || b[0] == '%') && b[1] == b[0] && b[2] == '{' {
		return 2, 1 // $${ stands for ${
	}
	_, size := utf8.DecodeRune(b)
	return size, size
}

func hexRuneLen(h []byte) int {
	n, err := strconv.ParseUint(string(h), 16, 32)
	if err != nil {
		return 1
	}
	if l := utf8.RuneLen(rune(n)); l > 0 {
		return l
	}
	return 3 // an invalid rune becomes U+FFFD
}

// advance moves pos over n source bytes, counting lines and characters.
func advance(src []byte, pos hcl.Pos, n int) hcl.Pos {
	stop := pos.Byte + n
	for pos.Byte < stop && pos.Byte < len(src) {
		r, size := utf8.DecodeRune(src[pos.Byte:])
		pos.Byte += size
		if r == '\n' {
			pos.Line++
			pos.Column = 1
		} else {
			pos.Column++
		}
	}
	return pos
}

// MentionedRange finds what a plugin's message about its block is about: a
// message that starts with the name of one of the block's attributes
// ("format: …", `bucket must not be empty`) points at that attribute's
// value, and one that starts with a nested block's name points at the
// attribute it names next ("batch: rows must be …") or at the block. It
// returns nil when the message names none, or the body is not native
// syntax.
func MentionedRange(body hcl.Body, msg string) *hcl.Range {
	b, ok := body.(*hclsyntax.Body)
	if !ok {
		return nil
	}
	words := leadingIdents(msg, 2)
	if len(words) == 0 {
		return nil
	}
	if a, ok := b.Attributes[words[0]]; ok {
		r := a.Expr.Range()
		return &r
	}
	for _, blk := range b.Blocks {
		if blk.Type != words[0] {
			continue
		}
		if len(words) > 1 {
			if a, ok := blk.Body.Attributes[words[1]]; ok {
				r := a.Expr.Range()
				return &r
			}
		}
		r := blk.DefRange()
		return &r
	}
	return nil
}

// leadingIdents returns up to n identifiers at the start of s, separated by
// ": " or a space.
func leadingIdents(s string, n int) []string {
	var out []string
	for len(out) < n {
		i := 0
		for i < len(s) && (s[i] == '_' || s[i] >= 'a' && s[i] <= 'z' || s[i] >= 'A' && s[i] <= 'Z' || i > 0 && s[i] >= '0' && s[i] <= '9') {
			i++
		}
		if i == 0 {
			break
		}
		out = append(out, s[:i])
		s = s[i:]
		switch {
		case len(s) >= 2 && s[:2] == ": ":
			s = s[2:]
		case len(s) >= 1 && s[0] == ' ':
			s = s[1:]
		default:
			return out
		}
	}
	return out
}
